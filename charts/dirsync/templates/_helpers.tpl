{{/* Chart name, truncated to a DNS label. */}}
{{- define "dirsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "dirsync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dirsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dirsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dirsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dirsync.labels" -}}
helm.sh/chart: {{ include "dirsync.chart" . }}
{{ include "dirsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dirsync
{{- end }}

{{- define "dirsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dirsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dirsync.leaseName" -}}
{{- default (printf "%s-leader" (include "dirsync.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "dirsync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespaces whose DirectorySyncs the operator watches, as a list (empty for all namespaces).
*/}}
{{- define "dirsync.watchedNamespaces" -}}
{{- if .Values.watchAllNamespaces }}
{{- list | toJson }}
{{- else if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs in every namespace it watches. Derived from the Api calls in
src/controller (see charts/dirsync/tests/permissions.golden):
- DirectorySyncs: list/watch (the controller's watch), status get (fresh status before a claim)
  and patch (claim, status; merge patches with a resourceVersion precondition);
- ConfigMaps (previews, managed sets, run reports it owns): get/list/watch, create + patch
  (server-side apply creates), delete (only objects it controls);
- Secrets: get (credentials of each resource) and list/watch (re-run when a referenced Secret
  changes);
- with operator.storeIn=secrets those objects are Secrets: Secrets get create, patch and
  delete too, and ConfigMaps keep only get/list/delete (find a managed set, preview or
  reports an earlier configmaps setting left, move or remove them) -- no create, patch or
  watch (charts/dirsync/tests/permissions-secrets.golden);
- events.k8s.io Events: create, patch (a repeated event becomes a series);
- workload identity: get ServiceAccounts (check azure.workload.identity/client-id) and create
  serviceaccounts/token (TokenRequest).
*/}}
{{- define "dirsync.namespaceRules" -}}
- apiGroups: ["dirsync.io"]
  resources: ["directorysyncs"]
  verbs: ["list", "watch"]
- apiGroups: ["dirsync.io"]
  resources: ["directorysyncs/status"]
  verbs: ["get", "patch"]
{{- if eq .Values.operator.storeIn "secrets" }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- else }}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.workloadIdentity }}
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
{{- end }}
