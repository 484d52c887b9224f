{{/* The projected ServiceAccount token node agents and aws-proxy send the mapper: made for the
mapper's audience (mapper.tokenAudience, checked in its TokenReview), bound to the pod, rotated
by the kubelet (the senders re-read it). Mount it at /var/run/secrets/intentmap and pass
--token-file=/var/run/secrets/intentmap/token. */}}
{{- define "intentmap.mapperTokenPath" -}}/var/run/secrets/intentmap/token{{- end -}}

{{- define "intentmap.mapperTokenMount" -}}
- name: mapper-token
  mountPath: /var/run/secrets/intentmap
  readOnly: true
{{- end -}}

{{- define "intentmap.mapperTokenVolume" -}}
- name: mapper-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.mapper.tokenAudience }}
          expirationSeconds: 3600
{{- end -}}
