"""Kafka SASL/SSL settings reach the Kafka client under kafka-python's own parameter names."""

from merc.bus.kafka import KafkaBus
from merc.runtime.config import Settings


def test_sasl_ssl_settings_reach_the_client(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    bus = KafkaBus(Settings(kafka_bootstrap="a:9093,b:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                            kafka_sasl_username="merc", kafka_sasl_password="s3cret", kafka_ssl_cafile=str(ca)))
    assert bus._common == {"bootstrap_servers": ["a:9093", "b:9093"], "security_protocol": "SASL_SSL",
                           "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "merc", "sasl_plain_password": "s3cret",
                           "ssl_cafile": str(ca)}


def test_plaintext_by_default():
    assert KafkaBus(Settings())._common == {"bootstrap_servers": ["127.0.0.1:19092"], "security_protocol": "PLAINTEXT"}
