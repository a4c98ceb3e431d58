{{/* Labels shared by every object of the release. */}}
{{- define "ztunnel.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: zmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* An image reference: the override when set, else <hub>/<name>:<tag>.
     Called with (list $root $override $name). */}}
{{- define "ztunnel.image" -}}
{{- $root := index . 0 -}}
{{- $override := index . 1 -}}
{{- $name := index . 2 -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "%s/%s:%s" $root.Values.global.hub $name (default $root.Chart.AppVersion $root.Values.global.tag) -}}
{{- end -}}
{{- end }}

{{- define "ztunnel.controllerName" -}}
{{- default (printf "istiod.%s.svc" .Release.Namespace) .Values.controller.name -}}
{{- end }}

{{- define "ztunnel.controllerAddress" -}}
{{- default (printf "%s:15012" (include "ztunnel.controllerName" .)) .Values.controller.address -}}
{{- end }}

{{- define "ztunnel.clusterName" -}}
{{- printf "zmesh-node-%s" .Release.Namespace -}}
{{- end }}
