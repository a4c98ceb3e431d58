{{/* Labels shared by every object of the release. */}}
{{- define "controller.labels" -}}
app.kubernetes.io/name: zmesh-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: zmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Labels selecting the controller's pods (immutable in the Deployment). */}}
{{- define "controller.selectorLabels" -}}
app: istiod
istio: pilot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* An image reference: the override when set, else <hub>/<name>:<tag>.
     Called with (list $root $override $name). */}}
{{- define "controller.image" -}}
{{- $root := index . 0 -}}
{{- $override := index . 1 -}}
{{- $name := index . 2 -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "%s/%s:%s" $root.Values.global.hub $name (default $root.Chart.AppVersion $root.Values.global.tag) -}}
{{- end -}}
{{- end }}

{{/* Cluster-scoped names carry the release namespace so two meshes (or two
     releases) do not collide. */}}
{{- define "controller.clusterName" -}}
{{- printf "zmesh-controller-%s" .Release.Namespace -}}
{{- end }}

