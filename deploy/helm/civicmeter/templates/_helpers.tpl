{{/* Names */}}
{{- define "civicmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; component objects are "<fullname>-<component>". */}}
{{- define "civicmeter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "civicmeter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: the Kubernetes recommended labels. Call with (dict "root" $ "component" "ingest"). */}}
{{- define "civicmeter.labels" -}}
helm.sh/chart: {{ include "civicmeter.chart" .root }}
{{ include "civicmeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/part-of: civicmeter
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "civicmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "civicmeter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "civicmeter.image" -}}
{{- $image := .Values.image }}
{{- $repository := $image.repository }}
{{- if $image.registry }}
{{- $repository = printf "%s/%s" $image.registry $image.repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository ($image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "civicmeter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "civicmeter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secrets: the name of the Secret holding each credential (existing, or this chart's). */}}
{{- define "civicmeter.secretName" -}}
{{- printf "%s-credentials" (include "civicmeter.fullname" .) }}
{{- end }}

{{- define "civicmeter.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "civicmeter.kafkaTls" -}}
{{- if or (eq .Values.kafka.securityProtocol "SSL") (eq .Values.kafka.securityProtocol "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "civicmeter.kafkaCa" -}}
{{- if and (include "civicmeter.kafkaTls" .) (or .Values.kafka.tls.caCert .Values.kafka.tls.existingSecret) }}true{{ end }}
{{- end }}

{{- define "civicmeter.kafkaCaSecretName" -}}
{{- .Values.kafka.tls.existingSecret | default (include "civicmeter.secretName" .) }}
{{- end }}

{{- define "civicmeter.clickhouseCa" -}}
{{- if and (eq .Values.clickhouse.interface "https") (or .Values.clickhouse.tls.caCert .Values.clickhouse.tls.existingSecret) }}true{{ end }}
{{- end }}

{{/* The ClickHouse password and CA volumes; `secretName` picks the Secret when they are given
as values. */}}
{{- define "civicmeter.volumes.clickhouse" -}}
{{- $root := .root -}}
- name: clickhouse-password
  secret:
    secretName: {{ $root.Values.clickhouse.existingSecret | default .secretName | default (include "civicmeter.secretName" $root) }}
    defaultMode: 0440
    items:
      - key: {{ if $root.Values.clickhouse.existingSecret }}{{ $root.Values.clickhouse.passwordKey }}{{ else }}clickhouse-password{{ end }}
        path: password
{{- if include "civicmeter.clickhouseCa" $root }}
- name: clickhouse-ca
  secret:
    secretName: {{ $root.Values.clickhouse.tls.existingSecret | default .secretName | default (include "civicmeter.secretName" $root) }}
    items:
      - key: {{ if $root.Values.clickhouse.tls.existingSecret }}{{ $root.Values.clickhouse.tls.caKey }}{{ else }}clickhouse-ca.crt{{ end }}
        path: ca.crt
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.clickhouse" -}}
- name: clickhouse-password
  mountPath: /etc/civicmeter/clickhouse
  readOnly: true
{{- if include "civicmeter.clickhouseCa" . }}
- name: clickhouse-ca
  mountPath: /etc/civicmeter/clickhouse-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Metrics: served when OTEL_METRICS_EXPORTER is prometheus. */}}
{{- define "civicmeter.metricsEnabled" -}}
{{- if eq (get .Values.otel.env "OTEL_METRICS_EXPORTER" | default "none" | lower) "prometheus" }}true{{ end }}
{{- end }}

{{- define "civicmeter.metricsPort" -}}
{{- get .Values.otel.env "OTEL_EXPORTER_PROMETHEUS_PORT" | default "9464" }}
{{- end }}

{{- define "civicmeter.otlpEnabled" -}}
{{- $traces := get .Values.otel.env "OTEL_TRACES_EXPORTER" | default "none" | lower }}
{{- $metrics := get .Values.otel.env "OTEL_METRICS_EXPORTER" | default "none" | lower }}
{{- if or (eq $traces "otlp") (eq $metrics "otlp") }}true{{ end }}
{{- end }}

{{/* Cross-field checks the schema cannot express with a clear message. */}}
{{- define "civicmeter.validate" -}}
{{- if and (include "civicmeter.kafkaSasl" .) (not .Values.kafka.sasl.username) }}
{{- fail (printf "kafka.sasl.username is required with kafka.securityProtocol=%s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (include "civicmeter.kafkaSasl" .) (not .Values.kafka.sasl.password) (not .Values.kafka.sasl.existingSecret) }}
{{- fail (printf "kafka.sasl.password or kafka.sasl.existingSecret is required with kafka.securityProtocol=%s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and (not .Values.pricing.existingConfigMap) (not .Values.pricing.catalog) }}
{{- fail "pricing.catalog or pricing.existingConfigMap is required" }}
{{- end }}
{{- $webhookEnv := list }}
{{- range .Values.notifier.webhookSecrets }}
{{- if has .name $webhookEnv }}
{{- fail (printf "notifier.webhookSecrets names %s twice" .name) }}
{{- end }}
{{- $webhookEnv = append $webhookEnv .name }}
{{- end }}
{{- end }}

{{/* Checksums that roll the pods when the chart's own config or secrets change. */}}
{{- define "civicmeter.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* Environment shared by the services. */}}
{{- define "civicmeter.env.common" -}}
- name: CIVICMETER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- range $name, $value := .Values.otel.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- if not (hasKey .Values.otel.env "OTEL_RESOURCE_ATTRIBUTES") }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.namespace.name=$(K8S_NAMESPACE),k8s.pod.name=$(K8S_POD_NAME)"
{{- end }}
- name: CIVICMETER_TOPIC_RAW
  value: {{ .Values.kafka.topics.raw | quote }}
- name: CIVICMETER_TOPIC_RATED
  value: {{ .Values.kafka.topics.rated | quote }}
- name: CIVICMETER_TOPIC_DLQ
  value: {{ .Values.kafka.topics.dlq | quote }}
- name: CIVICMETER_TOPIC_ALERTS
  value: {{ .Values.kafka.topics.alerts | quote }}
- name: CIVICMETER_TOPIC_PARTITIONS
  value: {{ .Values.kafka.topics.partitions | quote }}
- name: CIVICMETER_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.kafka.topics.replicationFactor | quote }}
{{- end }}

{{- define "civicmeter.env.kafka" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: CIVICMETER_CREATE_TOPICS
  value: {{ .Values.kafka.topics.create | quote }}
{{- if include "civicmeter.kafkaSasl" . }}
- name: KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /etc/civicmeter/kafka-sasl/password
{{- end }}
{{- if include "civicmeter.kafkaCa" . }}
- name: KAFKA_SSL_CAFILE
  value: /etc/civicmeter/kafka-ca/ca.crt
{{- end }}
{{- end }}

{{/* ClickHouse server settings. The password is a file from the Secret (civicmeter.volumes.clickhouse),
never an environment variable: those leak into crash dumps, `kubectl describe` and child processes. */}}
{{- define "civicmeter.env.clickhouse" -}}
{{- $root := .root -}}
- name: CLICKHOUSE_INTERFACE
  value: {{ $root.Values.clickhouse.interface | quote }}
- name: CLICKHOUSE_HOST
  value: {{ $root.Values.clickhouse.host | quote }}
- name: CLICKHOUSE_PORT
  value: {{ $root.Values.clickhouse.port | quote }}
- name: CLICKHOUSE_USERNAME
  value: {{ $root.Values.clickhouse.username | quote }}
- name: CLICKHOUSE_DATABASE
  value: {{ $root.Values.clickhouse.database | quote }}
- name: CLICKHOUSE_PASSWORD_FILE
  value: /etc/civicmeter/clickhouse/password
{{- if include "civicmeter.clickhouseCa" $root }}
- name: CLICKHOUSE_CA_CERT
  value: /etc/civicmeter/clickhouse-ca/ca.crt
{{- end }}
{{- end }}

{{- define "civicmeter.env.eventWindow" -}}
- name: CIVICMETER_MAX_EVENT_AGE_DAYS
  value: {{ .Values.events.maxAgeDays | quote }}
- name: CIVICMETER_MAX_EVENT_FUTURE_SECONDS
  value: {{ .Values.events.maxFutureSeconds | quote }}
{{- end }}

{{- define "civicmeter.env.userHmacKey" -}}
{{- if or .Values.userHmacKey.value .Values.userHmacKey.existingSecret }}
- name: CIVICMETER_USER_HMAC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.userHmacKey.existingSecret | default (include "civicmeter.secretName" .) }}
      key: {{ if .Values.userHmacKey.existingSecret }}{{ .Values.userHmacKey.key }}{{ else }}user-hmac-key{{ end }}
{{- end }}
{{- end }}

{{- define "civicmeter.env.pageTokenKeys" -}}
{{- if or .Values.pageTokenKeys.value .Values.pageTokenKeys.existingSecret }}
- name: CIVICMETER_PAGE_TOKEN_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.pageTokenKeys.existingSecret | default (include "civicmeter.secretName" .) }}
      key: {{ if .Values.pageTokenKeys.existingSecret }}{{ .Values.pageTokenKeys.key }}{{ else }}page-token-keys{{ end }}
{{- end }}
{{- end }}

{{- define "civicmeter.apiKeyHashes" -}}
{{- if or .Values.apiKeyHashes.value .Values.apiKeyHashes.existingSecret }}true{{ end }}
{{- end }}

{{- define "civicmeter.env.apiKeyHashes" -}}
{{- if include "civicmeter.apiKeyHashes" . }}
- name: CIVICMETER_API_KEYS_FILE
  value: /etc/civicmeter/api-keys/hashes
{{- end }}
{{- end }}

{{/* The policy file: from policies.existingConfigMap when set, else the image's own copy
(its CIVICMETER_POLICY_FILE), so neither the env nor the volume below is rendered. */}}
{{- define "civicmeter.env.policies" -}}
{{- if .Values.policies.existingConfigMap }}
- name: CIVICMETER_POLICY_FILE
  value: /etc/civicmeter/policies/{{ .Values.policies.key }}
{{- end }}
{{- end }}

{{- define "civicmeter.volumes.policies" -}}
{{- if .Values.policies.existingConfigMap }}
- name: policies
  configMap:
    name: {{ .Values.policies.existingConfigMap }}
    items:
      - key: {{ .Values.policies.key }}
        path: {{ .Values.policies.key }}
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.policies" -}}
{{- if .Values.policies.existingConfigMap }}
- name: policies
  mountPath: /etc/civicmeter/policies
  readOnly: true
{{- end }}
{{- end }}

{{- define "civicmeter.envFrom" -}}
{{- if .Values.otel.envFromSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.otel.envFromSecret }}
{{- end }}
{{- end }}

{{/* Volumes every pod has (a writable /tmp under a read-only root); with `kafka`, the Kafka CA
and the SASL password (a file, KAFKA_SASL_PASSWORD_FILE). */}}
{{- define "civicmeter.volumes.common" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if and .kafka (include "civicmeter.kafkaSasl" .root) }}
- name: kafka-sasl-password
  secret:
    secretName: {{ .root.Values.kafka.sasl.existingSecret | default (include "civicmeter.secretName" .root) }}
    defaultMode: 0440
    items:
      - key: {{ if .root.Values.kafka.sasl.existingSecret }}{{ .root.Values.kafka.sasl.passwordKey }}{{ else }}kafka-sasl-password{{ end }}
        path: password
{{- end }}
{{- if include "civicmeter.kafkaCa" .root }}
{{- if .kafka }}
- name: kafka-ca
  secret:
    secretName: {{ include "civicmeter.kafkaCaSecretName" .root }}
    items:
      - key: {{ if .root.Values.kafka.tls.existingSecret }}{{ .root.Values.kafka.tls.caKey }}{{ else }}kafka-ca.crt{{ end }}
        path: ca.crt
{{- end }}
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.common" -}}
- name: tmp
  mountPath: /tmp
{{- if and .kafka (include "civicmeter.kafkaCa" .root) }}
- name: kafka-ca
  mountPath: /etc/civicmeter/kafka-ca
  readOnly: true
{{- end }}
{{- if and .kafka (include "civicmeter.kafkaSasl" .root) }}
- name: kafka-sasl-password
  mountPath: /etc/civicmeter/kafka-sasl
  readOnly: true
{{- end }}
{{- end }}

{{- define "civicmeter.volumes.apiKeyHashes" -}}
{{- if include "civicmeter.apiKeyHashes" . }}
- name: api-keys
  secret:
    secretName: {{ .Values.apiKeyHashes.existingSecret | default (include "civicmeter.secretName" .) }}
    items:
      - key: {{ if .Values.apiKeyHashes.existingSecret }}{{ .Values.apiKeyHashes.key }}{{ else }}api-key-hashes{{ end }}
        path: hashes
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.apiKeyHashes" -}}
{{- if include "civicmeter.apiKeyHashes" . }}
- name: api-keys
  mountPath: /etc/civicmeter/api-keys
  readOnly: true
{{- end }}
{{- end }}

{{/* The gateway key file of ingest: only the tokens' hashes, from the chart's Secret or from
gatewayKeyHashes.existingSecret. Without it ingest is open (NOTES.txt says so). */}}
{{- define "civicmeter.gatewayKeyHashes" -}}
{{- if or .Values.gatewayKeyHashes.value .Values.gatewayKeyHashes.existingSecret }}true{{ end }}
{{- end }}

{{- define "civicmeter.env.gatewayKeyHashes" -}}
{{- if include "civicmeter.gatewayKeyHashes" . }}
- name: CIVICMETER_INGEST_KEYS_FILE
  value: /etc/civicmeter/gateway-keys/hashes
{{- end }}
{{- end }}

{{- define "civicmeter.volumes.gatewayKeyHashes" -}}
{{- if include "civicmeter.gatewayKeyHashes" . }}
- name: gateway-keys
  secret:
    secretName: {{ .Values.gatewayKeyHashes.existingSecret | default (include "civicmeter.secretName" .) }}
    items:
      - key: {{ if .Values.gatewayKeyHashes.existingSecret }}{{ .Values.gatewayKeyHashes.key }}{{ else }}gateway-key-hashes{{ end }}
        path: hashes
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.gatewayKeyHashes" -}}
{{- if include "civicmeter.gatewayKeyHashes" . }}
- name: gateway-keys
  mountPath: /etc/civicmeter/gateway-keys
  readOnly: true
{{- end }}
{{- end }}

{{/* Scheduling and pod-level settings; a service's own values win over the shared ones. */}}
{{- define "civicmeter.podSpec.common" -}}
{{- $root := .root }}
{{- $svc := .svc -}}
serviceAccountName: {{ include "civicmeter.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with ($root.Values.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with ($svc.nodeSelector | default $root.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($svc.tolerations | default $root.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($svc.affinity | default $root.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
topologySpreadConstraints:
{{- if $svc.topologySpreadConstraints }}
  {{- toYaml $svc.topologySpreadConstraints | nindent 2 }}
{{- else }}
{{- /* Default: spread the replicas over nodes and zones where the cluster allows it. */}}
{{- range (list "kubernetes.io/hostname" "topology.kubernetes.io/zone") }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "civicmeter.selectorLabels" (dict "root" $root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod metadata of a service's pod template. */}}
{{- define "civicmeter.podMetadata" -}}
{{- $root := .root -}}
labels:
  {{- include "civicmeter.labels" (dict "root" $root "component" .component) | nindent 2 }}
  {{- with (merge (dict) .svc.podLabels $root.Values.podLabels) }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  {{- include "civicmeter.checksums" $root | nindent 2 }}
  {{- with (merge (dict) .svc.podAnnotations $root.Values.podAnnotations) }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The seat file of billing: from seats.existingConfigMap; without one no seats are charged. */}}
{{- define "civicmeter.env.seats" -}}
{{- if .Values.seats.existingConfigMap }}
- name: CIVICMETER_SEATS_FILE
  value: /etc/civicmeter/seats/{{ .Values.seats.key }}
{{- end }}
{{- end }}

{{- define "civicmeter.volumes.seats" -}}
{{- if .Values.seats.existingConfigMap }}
- name: seats
  configMap:
    name: {{ .Values.seats.existingConfigMap }}
    items:
      - key: {{ .Values.seats.key }}
        path: {{ .Values.seats.key }}
{{- end }}
{{- end }}

{{- define "civicmeter.volumeMounts.seats" -}}
{{- if .Values.seats.existingConfigMap }}
- name: seats
  mountPath: /etc/civicmeter/seats
  readOnly: true
{{- end }}
{{- end }}
