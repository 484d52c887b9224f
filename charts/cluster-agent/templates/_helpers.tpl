{{/* The prefix of every object's name: the release name unless overridden. */}}
{{- define "intentmap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "intentmap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "intentmap.mapper" -}}{{ include "intentmap.fullname" . }}-mapper{{- end -}}
{{- define "intentmap.node" -}}{{ include "intentmap.fullname" . }}-node{{- end -}}
{{- define "intentmap.awsProxy" -}}{{ include "intentmap.fullname" . }}-aws-proxy{{- end -}}
{{- define "intentmap.webhookConfiguration" -}}{{ include "intentmap.fullname" . }}-aws-visibility{{- end -}}

{{/* Labels on every object; pass (dict "root" $ "component" "mapper"). */}}
{{- define "intentmap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "intentmap.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: intentmap
{{- end -}}

{{- define "intentmap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "intentmap.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag, or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "intentmap.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "intentmap.mapperURL" -}}
http://{{ include "intentmap.mapper" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.mapper.service.port }}
{{- end -}}

{{/* The Secret with the cloud credentials (the chart's, or the user's). */}}
{{- define "intentmap.cloudSecret" -}}
{{- if .Values.cloud.existingSecret -}}
{{ .Values.cloud.existingSecret }}
{{- else -}}
{{ include "intentmap.fullname" . }}-cloud
{{- end -}}
{{- end -}}

{{- define "intentmap.uploads" -}}
{{- if .Values.cloud.address -}}true{{- end -}}
{{- end -}}

{{/* httpGet probe on a named port, with the timings from values. */}}
{{- define "intentmap.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .timings }}
{{- end -}}
