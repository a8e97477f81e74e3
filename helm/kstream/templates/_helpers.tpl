{{/* Names and labels shared by every object of the release. */}}

{{- define "kstream.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.topology }}
kstream.io/topology: {{ . | trunc 63 | trimSuffix "-" | quote }}
{{- end }}
{{- end -}}

{{/* The objects of one node: "<fullname>-<node key>". Called with (dict "root" $ "key" $key). */}}
{{- define "kstream.nodeName" -}}
{{- printf "%s-%s" (include "kstream.fullname" .root) .key | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kstream.nodeSelectorLabels" -}}
{{ include "kstream.selectorLabels" .root }}
app.kubernetes.io/component: worker
kstream.io/node: {{ .key | quote }}
{{- end -}}

{{- define "kstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
A node's values over nodeDefaults, as YAML: maps merge key by key, anything else present in the
node wins, even false, 0 or null (sprig's mergeOverwrite would keep the default for those).
Called with (dict "base" MAP "over" MAP).
*/}}
{{- define "kstream.merge" -}}
{{- $out := deepCopy .base -}}
{{- range $k, $v := .over -}}
{{- if and (kindIs "map" $v) (kindIs "map" (get $out $k)) -}}
{{- $_ := set $out $k (include "kstream.merge" (dict "base" (get $out $k) "over" $v) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "kstream.node" -}}
{{- include "kstream.merge" (dict "base" .root.Values.nodeDefaults "over" .node) -}}
{{- end -}}

{{/* Replicas KEDA may run: at most one worker per input partition (the rest would sit idle). */}}
{{- define "kstream.maxReplicas" -}}
{{- $a := .node.autoscaling -}}
{{- $max := int (default .node.partitions $a.maxReplicas) -}}
{{- if gt $max (int .node.partitions) -}}
{{- fail (printf "nodes.%s.autoscaling.maxReplicas is %d but its input topic %s has %d partitions: a consumer group cannot use more workers than partitions" .key $max .node.topic (int .node.partitions)) -}}
{{- end -}}
{{- if lt $max (int $a.minReplicas) -}}
{{- fail (printf "nodes.%s.autoscaling.maxReplicas (%d) is below minReplicas (%d)" .key $max (int $a.minReplicas)) -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{- define "kstream.securityProtocol" -}}
{{- $k := .Values.kafka -}}
{{- if $k.securityProtocol -}}{{ $k.securityProtocol }}
{{- else if and $k.sasl.enabled $k.tls.enabled -}}SASL_SSL
{{- else if $k.sasl.enabled -}}SASL_PLAINTEXT
{{- else if $k.tls.enabled -}}SSL
{{- end -}}
{{- end -}}

{{/* Environment of every kstream container: settings file, Kafka address, credentials. */}}
{{- define "kstream.env" -}}
- name: KSTREAM_CONFIG
  value: /etc/kstream/kstream.toml
- name: KSTREAM_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
- name: KSTREAM_NAMESPACE
  value: {{ .Values.kafka.namespace | quote }}
{{- with include "kstream.securityProtocol" . }}
- name: KSTREAM_KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .enabled }}
- name: KSTREAM_KAFKA_SASL_MECHANISMS
  value: {{ .mechanism | quote }}
- name: KSTREAM_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .usernameKey | quote }}}
- name: KSTREAM_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .secretName | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if .enabled }}
- name: KSTREAM_KAFKA_SSL_CA_LOCATION
  value: {{ printf "/etc/kstream/tls/%s" .caKey | quote }}
{{- if .certKey }}
- name: KSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "/etc/kstream/tls/%s" .certKey | quote }}
- name: KSTREAM_KAFKA_SSL_KEY_LOCATION
  value: {{ printf "/etc/kstream/tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kstream.volumeMounts" -}}
- name: config
  mountPath: /etc/kstream/kstream.toml
  subPath: kstream.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.enabled }}
- name: tls
  mountPath: /etc/kstream/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Called with (dict "root" $ "configMap" NAME). */}}
{{- define "kstream.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .root.Values.kafka.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .root.Values.kafka.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "kstream.serviceAccountName" -}}
{{- default "default" .Values.serviceAccountName -}}
{{- end -}}

{{/* The worker's shutdown budget in seconds (settings.runtime.shutdown_timeout, default 20). */}}
{{- define "kstream.shutdownTimeout" -}}
{{- $runtime := default dict (get .Values.settings "runtime") -}}
{{- default 20 (get $runtime "shutdown_timeout") -}}
{{- end -}}
