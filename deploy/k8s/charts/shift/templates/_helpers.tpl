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

{{/* The model volume: writable by the pod only when model.init places the
     model in it (shift's own containers always mount it read-only). */}}
{{- define "shift.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.claimName }}
    readOnly: {{ not .Values.model.init.enabled }}
{{- else if eq .Values.model.source "hostPath" }}
  hostPath:
    path: {{ .Values.model.hostPath }}
    type: {{ if .Values.model.init.enabled }}DirectoryOrCreate{{ else }}Directory{{ end }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* The router's model volume: the model volume, or (router.modelVolume
     emptyDir) one of its own that model.init fills without the weights. */}}
{{- define "shift.routerModelVolume" -}}
{{- if eq .Values.router.modelVolume "emptyDir" -}}
- name: model
  emptyDir: {}
{{- else -}}
{{- include "shift.modelVolume" . }}
{{- end }}
{{- end -}}

{{/* Whether a pod's init container must place the weights: the router's
     needs only config.json and the tokenizer files when its volume is its
     own. Pass (dict "root" $ "component" "router") (or "workers"). */}}
{{- define "shift.initWeights" -}}
{{- if and (eq .component "router") (or (eq .root.Values.router.modelVolume "emptyDir") (eq .root.Values.model.source "emptyDir")) -}}
false
{{- else -}}
true
{{- end -}}
{{- end -}}

{{/* model.init's container, which places the model before shift starts:
     pass (dict "root" $ "component" .Values.router "name" "router") (or
     .Values.workers and "workers"). */}}
{{- define "shift.modelInit" -}}
{{- with .root.Values.model.init }}
{{- if .enabled -}}
- name: model-init
  image: {{ .image }}
  imagePullPolicy: {{ .pullPolicy }}
  {{- with .command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    # Where shift reads the model (in the volume mounted at /model).
    - name: SHIFT_MODEL_DIR
      value: {{ include "shift.modelDir" $.root | quote }}
    # "false": this pod reads only config.json, generation_config.json and
    # the tokenizer files (the router, in a volume of its own).
    - name: SHIFT_MODEL_WEIGHTS
      value: {{ include "shift.initWeights" (dict "root" $.root "component" $.name) | quote }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    allowPrivilegeEscalation: false
    capabilities:
      drop: ["ALL"]
  volumeMounts:
    - name: model
      mountPath: /model
    {{- with $.component.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A pod's own metadata from a component's values (router or workers):
     podLabels after the chart's labels, podAnnotations. Pass (list $ "router"
     .Values.router). */}}
{{- define "shift.podMetadata" -}}
{{- $root := index . 0 }}
{{- $values := index . 2 -}}
labels:
  {{- include "shift.labels" $root | nindent 2 }}
  app.kubernetes.io/component: {{ index . 1 }}
  {{- with $values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling of a component's pods: runtimeClassName, priorityClassName,
     nodeSelector, affinity, tolerations. */}}
{{- define "shift.podScheduling" -}}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "shift.modelDir" -}}
{{- if .Values.model.subPath -}}
/model/{{ .Values.model.subPath }}
{{- else -}}
/model
{{- end -}}
{{- end -}}

{{/* Mounts of the model and, when set, the TLS and internal token Secrets. */}}
{{- define "shift.mounts" -}}
- name: model
  mountPath: /model
  readOnly: true
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/shift/tls
  readOnly: true
{{- end }}
{{- if .Values.internalToken.secretName }}
- name: internal-token
  mountPath: /etc/shift/internal-token
  readOnly: true
{{- end }}
{{- end -}}

{{/* The internal token's Secret, readable by the pod's group (fsGroup)
     only: shift refuses a token file any user may read. */}}
{{- define "shift.internalTokenVolume" -}}
{{- if .Values.internalToken.secretName }}
- name: internal-token
  secret:
    secretName: {{ .Values.internalToken.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* The router's and every worker's --internal_token_file: the Secret's
     file, or none (mutual TLS only; the schema and this check say so). */}}
{{- define "shift.internalTokenFlag" -}}
{{- if .Values.internalToken.secretName -}}
--internal_token_file=/etc/shift/internal-token/token
{{- else -}}
--internal_token_file={{ if .Values.tls.secretName }}none{{ else }}{{ required "internalToken.secretName: the internal port needs a token Secret unless tls.secretName turns on mutual TLS" "" }}{{ end }}
{{- end -}}
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
