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

{{- /* Whole seconds of a duration written as the gateway takes it: 20s, 2m, 1h, 500ms. */}}
{{- define "tideway.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}{{ div (trimSuffix "ms" $d | int) 1000 }}
{{- else if hasSuffix "s" $d -}}{{ trimSuffix "s" $d | int }}
{{- else if hasSuffix "m" $d -}}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else if hasSuffix "h" $d -}}{{ mul (trimSuffix "h" $d | int) 3600 }}
{{- else -}}{{ fail (printf "%q is not a duration the gateway takes (e.g. 20s, 2m)" $d) }}
{{- end -}}
{{- end -}}
