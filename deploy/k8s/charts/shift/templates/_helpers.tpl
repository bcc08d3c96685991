{{/* The release's base name, at most 52 characters (StatefulSet pods add a suffix). */}}
{{- define "shift.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "shift.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (router or worker): pass (list $ "router"). */}}
{{- define "shift.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "shift.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The model volume. */}}
{{- define "shift.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.claimName }}
    readOnly: true
{{- else }}
  hostPath:
    path: {{ .Values.model.hostPath }}
    type: Directory
{{- end }}
{{- end -}}

{{- define "shift.modelDir" -}}
{{- if .Values.model.subPath -}}
/model/{{ .Values.model.subPath }}
{{- else -}}
/model
{{- end -}}
{{- end -}}

{{/* Mounts of the model and, when set, the TLS and API key Secrets. */}}
{{- define "shift.mounts" -}}
- name: model
  mountPath: /model
  readOnly: true
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/shift/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The TLS Secret a pod mounts: the router's, or with "worker" the workers'
     own (they never get the router's serving key). */}}
{{- define "shift.tlsVolume" -}}
{{- if .root.Values.tls.secretName }}
- name: tls
  secret:
    {{- if .worker }}
    secretName: {{ required "tls.workerSecretName: the workers' own certificate Secret is required with tls.secretName" .root.Values.tls.workerSecretName }}
    {{- else }}
    secretName: {{ .root.Values.tls.secretName }}
    {{- end }}
{{- end }}
{{- end -}}
