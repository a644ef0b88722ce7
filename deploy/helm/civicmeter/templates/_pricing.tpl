{{/*
The files of the pricing ConfigMap a pod mounts in one directory: the catalog, and the FX
table the catalog's `fx_file` names next to it. Mounted without subPath, so that the kubelet
updates them in place and the services reread them without a restart.
*/}}
{{- define "civicmeter.pricing.items" -}}
- key: {{ .Values.pricing.key }}
  path: {{ .Values.pricing.key }}
{{- if .Values.pricing.fxKey }}
- key: {{ .Values.pricing.fxKey }}
  path: {{ .Values.pricing.fxKey }}
{{- end }}
{{- end }}
