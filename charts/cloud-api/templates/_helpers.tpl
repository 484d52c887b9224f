{{/* The prefix of every object's name: the release name unless overridden. */}}
{{- define "cloud.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cloud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cloud.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cloud.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: intentmap
{{- end -}}

{{- define "cloud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cloud.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cloud-api
{{- end -}}

{{- define "cloud.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the database URL. */}}
{{- define "cloud.databaseSecret" -}}
{{- if .Values.database.url -}}
{{ include "cloud.fullname" . }}-database
{{- else -}}
{{ .Values.database.existingSecret }}
{{- end -}}
{{- end -}}

{{- define "cloud.databaseSecretKey" -}}
{{- if .Values.database.url -}}database-url{{- else -}}{{ .Values.database.existingSecretKey }}{{- end -}}
{{- end -}}

{{- define "cloud.databaseAppSecretKey" -}}
{{- if .Values.database.url -}}app-database-url{{- else -}}{{ .Values.database.existingSecretAppKey }}{{- end -}}
{{- end -}}

{{/* The migration init container: the owner's URL, and the serving role's to create it. */}}
{{- define "cloud.migrateDatabaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cloud.databaseSecret" . }}
      key: {{ include "cloud.databaseSecretKey" . }}
- name: APP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cloud.databaseSecret" . }}
      key: {{ include "cloud.databaseAppSecretKey" . }}
{{- end -}}

{{/* The serving container: the serving role's URL only. */}}
{{- define "cloud.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cloud.databaseSecret" . }}
      key: {{ include "cloud.databaseAppSecretKey" . }}
{{- end -}}

{{/* The Secret with the token hash keys; empty when the database's key is used. */}}
{{- define "cloud.tokenHashSecret" -}}
{{- if .Values.tokenHashKey.existingSecret -}}
{{ .Values.tokenHashKey.existingSecret }}
{{- else if .Values.tokenHashKey.generate -}}
{{ include "cloud.fullname" . }}-token-hash
{{- end -}}
{{- end -}}

{{- define "cloud.tokenHashFiles" -}}
{{- if .Values.tokenHashKey.existingSecret -}}
{{ join "," .Values.tokenHashKey.existingSecretKeys }}
{{- else -}}
token-hash.key
{{- end -}}
{{- end -}}

{{/* The Secret with the JWT signing keys; empty when each pod makes its own. */}}
{{- define "cloud.jwtSecret" -}}
{{- if .Values.jwt.existingSecret -}}
{{ .Values.jwt.existingSecret }}
{{- else if or .Values.jwt.keys .Values.jwt.generate -}}
{{ include "cloud.fullname" . }}-jwt
{{- end -}}
{{- end -}}

{{/* The key file names in that Secret, first (the signing key) first. */}}
{{- define "cloud.jwtFiles" -}}
{{- if .Values.jwt.existingSecret -}}
{{ join "," .Values.jwt.existingSecretKeys }}
{{- else if .Values.jwt.keys -}}
{{- $files := list -}}
{{- range $i, $_ := .Values.jwt.keys -}}{{- $files = append $files (printf "key-%d.pem" $i) -}}{{- end -}}
{{ join "," $files }}
{{- else if .Values.jwt.generate -}}
jwt.pem
{{- end -}}
{{- end -}}

{{- define "cloud.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{ toYaml .timings }}
{{- end -}}
