"""The message bus boundary: Kafka in deployments, in-process in embedded mode and unit tests.

Business logic sees only these interfaces, never a Kafka client.
"""

from merc.bus.base import (
    Bus,
    Consumer,
    Delivery,
    DeliveryFailed,
    Message,
    Producer,
    TopicPartition,
    TransactionalProducer,
    wait_all,
)

__all__ = ["Bus", "Consumer", "Delivery", "DeliveryFailed", "Message", "Producer", "TopicPartition", "TransactionalProducer",
           "make_bus", "wait_all"]


def make_bus(settings) -> Bus:
    """The Kafka bus named by the settings (the in-process one is built directly)."""
    from merc.bus.kafka import KafkaBus

    return KafkaBus(settings)
