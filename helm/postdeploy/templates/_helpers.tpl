{{/*
Names, labels and the switches that several templates share.
*/}}

{{- define "postdeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: RELEASE-postdeploy, or RELEASE when it already says postdeploy. */}}
{{- define "postdeploy.fullname" -}}
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

{{- define "postdeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postdeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "postdeploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "postdeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: postdeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "postdeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "postdeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "postdeploy.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when the operator watches the whole cluster (no namespaces listed). */}}
{{- define "postdeploy.clusterwide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/* "true" when the replicas elect a leader: more than one replica, or asked for. */}}
{{- define "postdeploy.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{- define "postdeploy.leaseName" -}}
{{- default (printf "%s-leader" (include "postdeploy.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The operator's ServiceAccount as an RBAC subject (a list item). */}}
{{- define "postdeploy.rbacSubject" -}}
- kind: ServiceAccount
  name: {{ include "postdeploy.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The kinds a cleanup check may delete (actions/cleanups.py), as RBAC group/resource. */}}
{{- define "postdeploy.cleanupResources" -}}
ConfigMap: {group: "", resource: configmaps}
Secret: {group: "", resource: secrets}
ServiceAccount: {group: "", resource: serviceaccounts}
Service: {group: "", resource: services}
Pod: {group: "", resource: pods}
Job: {group: batch, resource: jobs}
Role: {group: rbac.authorization.k8s.io, resource: roles}
RoleBinding: {group: rbac.authorization.k8s.io, resource: rolebindings}
ReplicaSet: {group: apps, resource: replicasets}
{{- end }}

{{- define "postdeploy.webhookService" -}}
{{- printf "%s-webhook" (include "postdeploy.fullname" .) }}
{{- end }}

{{/* The webhook certificate's Secret: cert-manager's, or the one the operator keeps. */}}
{{- define "postdeploy.webhookSecret" -}}
{{- $default := printf "%s-webhook-%s" (include "postdeploy.fullname" .) (ternary "tls" "certs" .Values.webhooks.certificate.certManager.enabled) }}
{{- default $default .Values.webhooks.certificate.secretName }}
{{- end }}

{{/* The review and template webhooks skip updates that leave the spec alone
(postdeploy.admission.configurations.SPEC_CHANGED). */}}
{{- define "postdeploy.specChanged" -}}
request.operation != 'UPDATE' || !has(oldObject.spec) || object.spec != oldObject.spec
{{- end }}
