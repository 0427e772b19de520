{{/* ---------------------------------------------------------------- names, labels */}}

{{- define "merc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-merc, or the release name when it already says merc. */}}
{{- define "merc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's object name: (dict "root" $ "component" "gateway") */}}
{{- define "merc.componentName" -}}
{{- printf "%s-%s" (include "merc.fullname" .root | trunc 45 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "merc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: (dict "root" $ "component" "encoder-text") */}}
{{- define "merc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "merc.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every object's labels: (dict "root" $ "component" "encoder-text") */}}
{{- define "merc.labels" -}}
helm.sh/chart: {{ include "merc.chart" .root }}
{{ include "merc.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: merc
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "merc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "merc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- images */}}

{{/* repository:tag or repository@digest: (dict "image" .Values.image "root" $) */}}
{{- define "merc.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* A component's image: (dict "root" $ "component" "gateway|fusion|encoder|jobs|test"); image.<component>
     when it names a repository, else image. */}}
{{- define "merc.image" -}}
{{- $image := .root.Values.image }}
{{- $own := get .root.Values.image .component }}
{{- if and $own $own.repository }}{{ $image = $own }}{{ end }}
{{- include "merc.imageRef" (dict "image" $image "root" .root) }}
{{- end }}

{{- define "merc.tritonImage" -}}
{{- include "merc.imageRef" (dict "image" .Values.triton.image "root" .) }}
{{- end }}

{{/* ---------------------------------------------------------------- where things are */}}

{{- define "merc.strimziClusterName" -}}
{{- default (include "merc.componentName" (dict "root" . "component" "kafka")) .Values.strimzi.cluster.name }}
{{- end }}

{{- define "merc.cnpgName" -}}
{{- default (include "merc.componentName" (dict "root" . "component" "pg")) .Values.cloudnativepg.name }}
{{- end }}

{{- define "merc.kafkaBootstrap" -}}
{{- if .Values.strimzi.cluster.create }}
{{- printf "%s-kafka-bootstrap:9092" (include "merc.strimziClusterName" .) }}
{{- else }}
{{- .Values.kafka.bootstrap }}
{{- end }}
{{- end }}

{{- define "merc.tritonUrl" -}}
{{- if .Values.triton.enabled }}
{{- printf "%s:%d" (include "merc.componentName" (dict "root" . "component" "triton")) (int .Values.triton.ports.grpc) }}
{{- else }}
{{- .Values.triton.externalUrl }}
{{- end }}
{{- end }}

{{/* host:port of one encoder, or "" when that modality is off (the gateway then skips it). */}}
{{- define "merc.encoderUrl" -}}
{{- $enc := index .root.Values.encoders .modality }}
{{- if $enc.enabled }}
{{- printf "%s:%d" (include "merc.componentName" (dict "root" .root "component" (printf "encoder-%s" .modality))) (int $enc.port) }}
{{- end }}
{{- end }}

{{/* The Secret holding the chart-managed values (database URL, SASL password). */}}
{{- define "merc.secretName" -}}
{{- include "merc.fullname" . }}
{{- end }}

{{- define "merc.kafkaSaslEnabled" -}}
{{- if .Values.kafka.sasl.mechanism }}true{{- end }}
{{- end }}

{{- define "merc.kafkaSecretName" -}}
{{- default (include "merc.secretName" .) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "merc.databaseSecretName" -}}
{{- default (include "merc.secretName" .) .Values.database.existingSecret }}
{{- end }}

{{/* ---------------------------------------------------------------- environment */}}

{{/* Secret-backed Kafka settings, for every pod that talks to Kafka. */}}
{{- define "merc.env.kafka" -}}
{{- if include "merc.kafkaSaslEnabled" . }}
- name: MERC_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "merc.kafkaSecretName" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- end }}

{{/* MERC_DATABASE_URL, for the pods that use PostgreSQL (gateway, fusion, migration). With
     CloudNativePG the URL carries no password: libpq reads PGPASSWORD, from the operator's Secret. */}}
{{- define "merc.env.database" -}}
{{- if .Values.cloudnativepg.enabled }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "merc.cnpgName" . }}-app
      key: password
- name: MERC_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s@%s-rw:5432/%s" .Values.cloudnativepg.owner (include "merc.cnpgName" .) .Values.cloudnativepg.database | quote }}
{{- else }}
- name: MERC_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "merc.databaseSecretName" . }}
      key: {{ .Values.database.urlKey }}
{{- end }}
{{- end }}

{{- define "merc.kafkaCaPath" -}}
/etc/merc/kafka-ca/{{ .Values.kafka.tls.caKey }}
{{- end }}

{{- define "merc.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "merc.kafkaCaMount" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/merc/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* API keys (gateway, encoders, fusion): the file of `tenant:<sha256>` lines, mounted read-only. */}}
{{- define "merc.env.apiKeys" -}}
{{- if .Values.apiKeys.existingSecret }}
- name: MERC_API_KEYS_FILE
  value: {{ printf "/etc/merc/api-keys/%s" .Values.apiKeys.key | quote }}
{{- end }}
{{- end }}

{{- define "merc.apiKeysVolume" -}}
{{- if .Values.apiKeys.existingSecret }}
- name: api-keys
  secret:
    secretName: {{ .Values.apiKeys.existingSecret }}
    items:
      - key: {{ .Values.apiKeys.key }}
        path: {{ .Values.apiKeys.key }}
{{- end }}
{{- end }}

{{- define "merc.apiKeysMount" -}}
{{- if .Values.apiKeys.existingSecret }}
- name: api-keys
  mountPath: /etc/merc/api-keys
  readOnly: true
{{- end }}
{{- end }}

{{/* gRPC TLS: (dict "root" $ "server" true) for a service (serves, and calls or probes itself),
     "server" false for a client only (the helm test Pod). Files from tls.existingSecret. */}}
{{- define "merc.env.tls" -}}
{{- $tls := .root.Values.tls }}
{{- if $tls.enabled }}
{{- if .server }}
- name: MERC_TLS_CERT_FILE
  value: /etc/merc/tls/tls.crt
- name: MERC_TLS_KEY_FILE
  value: /etc/merc/tls/tls.key
{{- if $tls.mutual }}
- name: MERC_TLS_CLIENT_CA_FILE
  value: {{ printf "/etc/merc/tls/%s" $tls.caKey | quote }}
{{- end }}
{{- end }}
- name: MERC_TLS_CA_FILE
  value: {{ printf "/etc/merc/tls/%s" $tls.caKey | quote }}
{{- if $tls.mutual }}
- name: MERC_TLS_CLIENT_CERT_FILE
  value: /etc/merc/tls/tls.crt
- name: MERC_TLS_CLIENT_KEY_FILE
  value: /etc/merc/tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "merc.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: grpc-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{- define "merc.tlsMount" -}}
{{- if .Values.tls.enabled }}
- name: grpc-tls
  mountPath: /etc/merc/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* The helm test Pod's API key (apiKeys.testKey), acting for the key's tenant. */}}
{{- define "merc.env.testKey" -}}
{{- with .Values.apiKeys.testKey }}
{{- if .existingSecret }}
- name: MERC_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- if .tenant }}
- name: MERC_TENANT
  value: {{ .tenant | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* MERC_PSEUDONYM_SECRET (encoders only), from privacy.pseudonymSecret.existingSecret or the chart's Secret. */}}
{{- define "merc.env.pseudonym" -}}
{{- $p := .Values.privacy.pseudonymSecret }}
{{- if or $p.existingSecret $p.value }}
- name: MERC_PSEUDONYM_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ default (include "merc.secretName" .) $p.existingSecret }}
      key: {{ $p.key }}
{{- end }}
{{- end }}

{{/* MERC_EMBEDDING_KEYS (encoders and fusion: they seal and open embedding records), from
     privacy.embeddingKeys.existingSecret or the chart's Secret. */}}
{{- define "merc.env.embeddingKeys" -}}
{{- $k := .Values.privacy.embeddingKeys }}
{{- if or $k.existingSecret $k.value }}
- name: MERC_EMBEDDING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ default (include "merc.secretName" .) $k.existingSecret }}
      key: {{ $k.key }}
{{- end }}
{{- end }}

{{/* Every volume / mount a MERC service pod gets besides /tmp: (dict "root" $ "apiKeys" true) */}}
{{- define "merc.serviceVolumes" -}}
{{- with include "merc.kafkaCaVolume" .root | trim }}
{{ . }}
{{- end }}
{{- if .apiKeys }}
{{- with include "merc.apiKeysVolume" .root | trim }}
{{ . }}
{{- end }}
{{- end }}
{{- with include "merc.tlsVolume" .root | trim }}
{{ . }}
{{- end }}
{{- end }}

{{- define "merc.serviceMounts" -}}
{{- with include "merc.kafkaCaMount" .root | trim }}
{{ . }}
{{- end }}
{{- if .apiKeys }}
{{- with include "merc.apiKeysMount" .root | trim }}
{{ . }}
{{- end }}
{{- end }}
{{- with include "merc.tlsMount" .root | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- pod pieces */}}

{{/* Topology spread for one component: (dict "root" $ "component" "gateway" "own" .topologySpreadConstraints) */}}
{{- define "merc.topologySpread" -}}
{{- if .own }}
topologySpreadConstraints:
  {{- toYaml .own | nindent 2 }}
{{- else if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range .root.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "merc.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Scheduling knobs shared by every workload: (dict "root" $ "component" "..." "c" .Values.gateway) */}}
{{- define "merc.scheduling" -}}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "merc.topologySpread" (dict "root" .root "component" .component "own" .c.topologySpreadConstraints) }}
{{- end }}

{{/* A pod template's labels and annotations: the chart's own, then the global podLabels /
     podAnnotations and the component's (.c: its values; a component's key wins over a global one).
     The chart's own are never replaced: selectors rely on the labels, rollouts and hooks on the
     annotations. (dict "root" $ "component" "gateway" "c" .Values.gateway "annotations" (dict ...)) */}}
{{- define "merc.podMetadata" -}}
{{- $c := default (dict) .c }}
{{- $labels := merge (fromYaml (include "merc.labels" .)) (default (dict) $c.podLabels) (default (dict) .root.Values.podLabels) }}
labels:
  {{- toYaml $labels | nindent 2 }}
{{- with merge (default (dict) .annotations) (default (dict) $c.podAnnotations) (default (dict) .root.Values.podAnnotations) }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* extraEnv, extraVolumes, extraVolumeMounts: the global list, then the component's (.c; an entry
     of its own replaces a global one with the same `key`: name, or mountPath for mounts). Renders
     list items, or nothing: (dict "root" $ "c" .Values.gateway "field" "extraEnv" "key" "name") */}}
{{- define "merc.extraList" -}}
{{- $own := default (list) (get (default (dict) .c) .field) }}
{{- $key := .key }}
{{- $mine := list }}
{{- range $own }}{{ $mine = append $mine (get . $key) }}{{ end }}
{{- $items := list }}
{{- range (default (list) (get .root.Values .field)) }}
{{- if not (has (get . $key) $mine) }}{{ $items = append $items . }}{{ end }}
{{- end }}
{{- with concat $items $own }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "merc.extraEnv" -}}
{{- include "merc.extraList" (dict "root" .root "c" .c "field" "extraEnv" "key" "name") }}
{{- end }}

{{- define "merc.extraVolumes" -}}
{{- include "merc.extraList" (dict "root" .root "c" .c "field" "extraVolumes" "key" "name") }}
{{- end }}

{{- define "merc.extraVolumeMounts" -}}
{{- include "merc.extraList" (dict "root" .root "c" .c "field" "extraVolumeMounts" "key" "mountPath") }}
{{- end }}

{{- define "merc.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Probes on the standard grpc.health.v1 service: (dict "root" $ "port" 28061 "startupFailures" 30).
     Native gRPC probes; with tls.enabled an exec probe instead (kubelet's gRPC probe speaks no TLS):
     merc.runtime.healthcheck dials 127.0.0.1 with MERC_TLS_CA_FILE (and the client certificate, if mutual). */}}
{{- define "merc.healthAction" -}}
{{- if .root.Values.tls.enabled }}
exec:
  command: ["python", "-m", "merc.runtime.healthcheck", "127.0.0.1:{{ .port }}"]
{{- else }}
grpc:
  port: {{ .port }}
{{- end }}
{{- end }}

{{- define "merc.grpcProbes" -}}
{{- $action := include "merc.healthAction" . | trim }}
{{- /* An exec probe starts a Python interpreter: give it time. */}}
{{- $exec := .root.Values.tls.enabled -}}
startupProbe:
  {{- $action | nindent 2 }}
  periodSeconds: 5
  {{- if $exec }}
  timeoutSeconds: 5
  {{- end }}
  failureThreshold: {{ default 60 .startupFailures }}
readinessProbe:
  {{- $action | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: {{ ternary 5 2 $exec }}
  failureThreshold: 3
livenessProbe:
  {{- $action | nindent 2 }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: {{ default 3 .livenessFailures }}
{{- end }}

{{/* An HPA: (dict "root" $ "component" "encoder-text" "kind" "Deployment" "a" .autoscaling) */}}
{{- define "merc.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "merc.componentName" . }}
  labels:
    {{- include "merc.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ .kind }}
    name: {{ include "merc.componentName" . }}
  minReplicas: {{ .a.minReplicas }}
  maxReplicas: {{ .a.maxReplicas }}
  metrics:
    {{- with .a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with .a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  {{- with .a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- checks values.schema.json cannot express */}}
{{- define "merc.validate" -}}
{{- $partitions := int .Values.kafka.partitions }}
{{- if gt (int .Values.fusion.replicaCount) $partitions }}
{{- fail (printf "fusion.replicaCount (%d) exceeds kafka.partitions (%d): an instance beyond the partition count owns nothing" (int .Values.fusion.replicaCount) $partitions) }}
{{- end }}
{{- if and .Values.fusion.keda.enabled (gt (int .Values.fusion.keda.maxReplicaCount) $partitions) }}
{{- fail (printf "fusion.keda.maxReplicaCount (%d) exceeds kafka.partitions (%d)" (int .Values.fusion.keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if and .Values.fusion.keda.enabled (gt (int .Values.fusion.keda.minReplicaCount) (int .Values.fusion.keda.maxReplicaCount)) }}
{{- fail "fusion.keda.minReplicaCount exceeds fusion.keda.maxReplicaCount" }}
{{- end }}
{{- if not (or .Values.encoders.text.enabled .Values.encoders.audio.enabled .Values.encoders.vision.enabled) }}
{{- fail "enable at least one of encoders.text, encoders.audio, encoders.vision" }}
{{- end }}
{{- if and (not .Values.triton.enabled) (not .Values.triton.externalUrl) }}
{{- fail "triton.enabled is false: set triton.externalUrl (gRPC host:port of your Triton)" }}
{{- end }}
{{- if and (eq .Values.triton.modelRepository.source "volume") (not .Values.triton.modelRepository.volume) }}
{{- fail "triton.modelRepository.source is volume: set triton.modelRepository.volume (e.g. persistentVolumeClaim.claimName)" }}
{{- end }}
{{- if not .Values.cloudnativepg.enabled }}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) }}
{{- fail "set database.existingSecret (a Secret with the SQLAlchemy URL under database.urlKey), database.url, or cloudnativepg.enabled" }}
{{- end }}
{{- if and .Values.database.existingSecret .Values.database.url }}
{{- fail "set either database.existingSecret or database.url, not both" }}
{{- end }}
{{- end }}
{{- if include "merc.kafkaSaslEnabled" . }}
{{- if not (hasPrefix "SASL_" .Values.kafka.securityProtocol) }}
{{- fail "kafka.sasl.mechanism is set: kafka.securityProtocol must be SASL_PLAINTEXT or SASL_SSL" }}
{{- end }}
{{- if and (not .Values.kafka.sasl.existingSecret) (not .Values.kafka.sasl.password) }}
{{- fail "kafka.sasl.mechanism is set: give kafka.sasl.existingSecret or kafka.sasl.password" }}
{{- end }}
{{- if not .Values.kafka.sasl.username }}
{{- fail "kafka.sasl.mechanism is set: give kafka.sasl.username" }}
{{- end }}
{{- else if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
{{- fail "kafka.securityProtocol is SASL_*: set kafka.sasl.mechanism" }}
{{- end }}
{{- if and .Values.strimzi.cluster.create (ne .Values.kafka.securityProtocol "PLAINTEXT") }}
{{- fail "strimzi.cluster.create makes a plain internal listener: keep kafka.securityProtocol PLAINTEXT" }}
{{- end }}
{{- if and .Values.apiKeys.existingSecret .Values.tests.enabled (not .Values.apiKeys.testKey.existingSecret) }}
{{- fail "apiKeys.existingSecret is set: helm test needs a key too. Set apiKeys.testKey.existingSecret (a Secret holding a raw key from `merc keys new TENANT`), or tests.enabled=false" }}
{{- end }}
{{- $gw := .Values.gateway }}
{{- if and $gw.httpPort (or (eq (int $gw.httpPort) (int $gw.port)) (eq (int $gw.httpPort) (int $gw.metricsPort))) }}
{{- fail (printf "gateway.httpPort (%d) must differ from gateway.port and gateway.metricsPort" (int $gw.httpPort)) }}
{{- end }}
{{- if and .Values.privacy.pseudonymSecret.existingSecret .Values.privacy.pseudonymSecret.value }}
{{- fail "privacy.pseudonymSecret: set either existingSecret or value, not both" }}
{{- end }}
{{- $ek := .Values.privacy.embeddingKeys }}
{{- if and $ek.existingSecret $ek.value }}
{{- fail "privacy.embeddingKeys: set either existingSecret or value, not both" }}
{{- end }}
{{- if and (or .Values.privacy.pseudonymSecret.existingSecret .Values.privacy.pseudonymSecret.value) (not (or $ek.existingSecret $ek.value)) }}
{{- fail "privacy.pseudonymSecret is set: set privacy.embeddingKeys too (a Secret holding `k1:<openssl rand -hex 32>`), so that embedding records are sealed on Kafka; README.md \"What is stored and published\"" }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- NetworkPolicy rules */}}

{{/* One egress rule: (dict "to" LIST "ports" LIST) — no `to`: any destination on those ports. */}}
{{- define "merc.egressRule" -}}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "merc.egress.dns" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - port: {{ . }}
      protocol: UDP
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{- define "merc.egress.kafka" -}}
{{- $to := .Values.networkPolicy.kafka.to }}
{{- if and (not $to) .Values.strimzi.cluster.create }}
{{- $to = list (dict "podSelector" (dict "matchLabels" (dict "strimzi.io/cluster" (include "merc.strimziClusterName" .) "strimzi.io/kind" "Kafka"))) }}
{{- end }}
{{- include "merc.egressRule" (dict "to" $to "ports" .Values.networkPolicy.kafka.ports) }}
{{- end }}

{{- define "merc.egress.postgresql" -}}
{{- $to := .Values.networkPolicy.postgresql.to }}
{{- if and (not $to) .Values.cloudnativepg.enabled }}
{{- $to = list (dict "podSelector" (dict "matchLabels" (dict "cnpg.io/cluster" (include "merc.cnpgName" .)))) }}
{{- end }}
{{- include "merc.egressRule" (dict "to" $to "ports" .Values.networkPolicy.postgresql.ports) }}
{{- end }}

{{- define "merc.egress.triton" -}}
{{- if .Values.triton.enabled }}
{{- $to := list (dict "podSelector" (dict "matchLabels" (fromYaml (include "merc.selectorLabels" (dict "root" . "component" "triton"))))) }}
{{- include "merc.egressRule" (dict "to" $to "ports" (list .Values.triton.ports.grpc)) }}
{{- else }}
{{- $port := regexFind "[0-9]+$" .Values.triton.externalUrl | default "8001" }}
{{- include "merc.egressRule" (dict "to" (list) "ports" (list $port)) }}
{{- end }}
{{- end }}

{{/* Ingress to a metrics port, only from networkPolicy.metrics.from (empty: anyone): (dict "root" $ "port" 29090) */}}
{{- define "merc.ingress.metrics" -}}
- ports:
    - port: {{ .port }}
      protocol: TCP
  {{- with .root.Values.networkPolicy.metrics.from }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A podSelector peer for one component: (dict "root" $ "component" "gateway") */}}
{{- define "merc.peer" -}}
- podSelector:
    matchLabels:
      {{- include "merc.selectorLabels" . | nindent 6 }}
{{- end }}
