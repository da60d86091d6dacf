{{- define "reprise.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "reprise.labels" -}}
app.kubernetes.io/name: reprise
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "reprise.selectorLabels" -}}
app.kubernetes.io/name: reprise
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "reprise.serviceAccountName" -}}
{{- default (include "reprise.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "reprise.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{- /* The operator's rules, shared by the ClusterRole and the per-namespace Roles. */ -}}
{{- define "reprise.rules" -}}
rules:
  # Watch every reprise kind (one shared watch per kind).
  - apiGroups: [reprise.dev]
    resources: [applications, databases, incidents, maintenancewindows, recoveryplans, servers, sites, virtualmachines]
    verbs: [get, list, watch]
  # The procedure executor asks a component's controller for a recovery
  # action through the `reprise.dev/action` annotation (a metadata patch);
  # a Site's is `failover`, once a person approved it in the site Incident.
  - apiGroups: [reprise.dev]
    resources: [applications, databases, servers, sites, virtualmachines]
    verbs: [patch]
  # A site that takes over creates, from the signed plan bundle the active
  # site published, the reprise objects its cluster lacks (server-side
  # apply: a patch that creates; only objects absent from the cluster).
  - apiGroups: [reprise.dev]
    resources: [applications, databases, maintenancewindows, recoveryplans, servers, virtualmachines]
    verbs: [create, patch]
  # Open Incidents when a covered component fails; delete closed ones past
  # the plan's incidentRetention. `open` is not a verb the API server knows:
  # the admission policy (admission.yaml) asks for it, so only holders of it
  # (this operator, cluster-admin) can create an Incident that pages people.
  - apiGroups: [reprise.dev]
    resources: [incidents]
    verbs: [create, delete, open]
  # Write status (server-side apply on the status subresource).
  - apiGroups: [reprise.dev]
    resources:
      - applications/status
      - databases/status
      - incidents/status
      - maintenancewindows/status
      - recoveryplans/status
      - servers/status
      - sites/status
      - virtualmachines/status
    verbs: [patch]
  # Secrets: read those specs refer to (BMC and database credentials, CA
  # bundles), and only when the Secret offers itself to the object
  # (annotation reprise.dev/for); list/watch their metadata only, so a
  # rotated password is seen (RBAC cannot narrow a list by label: narrow it
  # by namespace with watchNamespaces); apply the connection Secrets written
  # for database roles (server-side apply is a patch; create on first
  # apply), never over a Secret another owner controls.
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch, create, patch]
  # VirtualMachines own a KubeVirt VirtualMachine (applied, deleted for
  # `recreate`); its instance is watched and deleted for `restart`; snapshots
  # are taken and pruned; restores are created and watched. (Only used when
  # KubeVirt is installed.)
  - apiGroups: [kubevirt.io]
    resources: [virtualmachines]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [kubevirt.io]
    resources: [virtualmachineinstances]
    verbs: [get, list, watch, delete]
  - apiGroups: [snapshot.kubevirt.io]
    resources: [virtualmachinesnapshots]
    verbs: [get, list, watch, create, delete]
  # Restores: into the VM (restoreSnapshot), or into a drill's scratch VM,
  # deleted with it when the drill ends.
  - apiGroups: [snapshot.kubevirt.io]
    resources: [virtualmachinerestores]
    verbs: [get, list, watch, create, delete]
  # Applications own a Deployment and a Service: watch them (drift, rollout
  # progress), apply them (server-side apply is a patch, create on first apply),
  # delete them for the `recreate` recovery action.
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch, delete]
  # A site that is not active (a standby, or demoted by a newer epoch)
  # scales the Deployments reprise owns to zero.
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [patch]
  - apiGroups: [""]
    resources: [services]
    verbs: [get, list, watch, create, patch, delete]
  # Record what happened as Events (new ones, and the series count of repeats).
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [create, patch]
{{- end -}}
