"""tests/k8s runs only inside `make test-k8s` (deploy/cluster/test.sh), which builds the images, starts
the cluster and the external Kafka and PostgreSQL, and sets MERC_K8S_CLUSTER=1."""

import os

collect_ignore_glob = [] if os.environ.get("MERC_K8S_CLUSTER") == "1" else ["test_*.py"]
