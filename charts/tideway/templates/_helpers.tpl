{{/* Names shared by the templates. */}}
{{- define "tideway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tideway.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tideway.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "tideway.secretName" -}}
{{- default (printf "%s-api-keys" (include "tideway.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{- define "tideway.redisUrl" -}}
{{- if and .Values.redis.cluster .Values.redis.enabled -}}
{{- fail "redis.cluster needs redis.enabled=false and redis.url listing the Redis Cluster's seed nodes (the built-in Redis is a single server)" -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379" (include "tideway.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false" .Values.redis.url -}}
{{- end -}}
{{- end -}}
