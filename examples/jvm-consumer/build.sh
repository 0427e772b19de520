#!/usr/bin/env bash
# Builds and tests the JVM consumer: protoc and every jar come from Maven Central into ~/.m2 on the
# first build; later builds need no network. Then prints how to run it.
set -euo pipefail
cd "$(dirname "$0")"
mvn -q package "$@"
echo "run: java -cp '$PWD/target/jvm-consumer-1.jar:$PWD/target/lib/*' dev.merc.examples.Consumer --bootstrap 127.0.0.1:19092 [--tenant T] [--group G]"
