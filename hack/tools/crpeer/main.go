// crpeer: a minimal controller-runtime operator doing the hot path of
// reprise's Application controller, for the side-by-side benchmark only
// (benches/applications.rs, REPRISE_BENCH_PEER=1). It is not part of the
// product and no test uses it.
//
// Per Application (reprise.dev/v1alpha1): a Deployment and a Service by
// server-side apply, controlled by the Application, recreated when deleted
// or changed; the same labels, selector, image, port and readiness probe as
// reprise's; and the same status words a user reads: observedGeneration, the
// Ready condition, and lastRepair when a child was recreated. That is the
// same job, so writes are compared like for like.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

var appGVK = schema.GroupVersionKind{Group: "reprise.dev", Version: "v1alpha1", Kind: "Application"}

const (
	manager  = "crpeer"
	appLabel = "reprise.dev/application"
)

type reconciler struct {
	client.Client
	scheme *runtime.Scheme
	// events: an Event per repair (events.k8s.io/v1, as reprise publishes), or nil.
	events recorder.EventRecorder
}

func newApp() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(appGVK)
	return u
}

func labels(name string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/managed-by": "reprise",
		appLabel:                       name,
		"app.kubernetes.io/name":       name,
	}
}

func (r *reconciler) desired(app *unstructured.Unstructured) (*appsv1.Deployment, *corev1.Service, error) {
	name, ns := app.GetName(), app.GetNamespace()
	image, _, _ := unstructured.NestedString(app.Object, "spec", "image")
	version, _, _ := unstructured.NestedString(app.Object, "spec", "version")
	replicas, _, _ := unstructured.NestedInt64(app.Object, "spec", "replicas")
	port, _, _ := unstructured.NestedInt64(app.Object, "spec", "port")
	path, hasProbe, _ := unstructured.NestedString(app.Object, "spec", "healthCheck", "path")
	reps := int32(replicas)
	container := corev1.Container{
		Name:  "app",
		Image: strings.ReplaceAll(image, "{version}", version),
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}},
	}
	if hasProbe {
		container.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}}}
	}
	meta := metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels(name)}
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: &reps,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{appLabel: name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels(name), Annotations: map[string]string{"reprise.dev/version": version}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container}},
			},
		},
	}
	s := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: *meta.DeepCopy(),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{appLabel: name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: int32(port), TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
	if err := controllerutil.SetControllerReference(app, d, r.scheme); err != nil {
		return nil, nil, err
	}
	if err := controllerutil.SetControllerReference(app, s, r.scheme); err != nil {
		return nil, nil, err
	}
	return d, s, nil
}

func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	app := newApp()
	if err := r.Get(ctx, req.NamespacedName, app); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	d, s, err := r.desired(app)
	if err != nil {
		return ctrl.Result{}, err
	}
	_, hadStatus, _ := unstructured.NestedFieldNoCopy(app.Object, "status", "observedGeneration")
	var repair map[string]any
	live := &appsv1.Deployment{}
	err = r.Get(ctx, req.NamespacedName, live)
	missing := apierrors.IsNotFound(err)
	if err != nil && !missing {
		return ctrl.Result{}, err
	}
	if missing || !same(live, d) {
		//nolint:staticcheck // client.Apply with a typed object: the shortest form in v0.25.
		if err := r.Patch(ctx, d, client.Apply, client.FieldOwner(manager), client.ForceOwnership); err != nil {
			return ctrl.Result{}, err
		}
		if missing && hadStatus {
			repair = map[string]any{"time": time.Now().UTC().Format(time.RFC3339), "object": "Deployment", "action": "Recreated",
				"message": fmt.Sprintf("Deployment %s was deleted; recreated it", d.Name)}
			if r.events != nil {
				r.events.Eventf(app, nil, corev1.EventTypeNormal, "Recreated", "Repair", "Deployment %s was deleted; recreated it", d.Name)
			}
		}
		live = d
	}
	liveSvc := &corev1.Service{}
	if err := r.Get(ctx, req.NamespacedName, liveSvc); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		//nolint:staticcheck
		if err := r.Patch(ctx, s, client.Apply, client.FieldOwner(manager), client.ForceOwnership); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, r.writeStatus(ctx, app, live, repair)
}

// same: the fields reprise compares for drift.
func same(live, want *appsv1.Deployment) bool {
	if live.Spec.Replicas == nil || *live.Spec.Replicas != *want.Spec.Replicas || len(live.Spec.Template.Spec.Containers) != 1 {
		return false
	}
	return live.Spec.Template.Spec.Containers[0].Image == want.Spec.Template.Spec.Containers[0].Image
}

func (r *reconciler) writeStatus(ctx context.Context, app *unstructured.Unstructured, d *appsv1.Deployment, repair map[string]any) error {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	ready := d.Status.AvailableReplicas >= want
	status, reason := "False", "Unavailable"
	if ready {
		status, reason = "True", "Reconciled"
	}
	conds, _, _ := unstructured.NestedSlice(app.Object, "status", "conditions")
	gen := app.GetGeneration()
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" && m["status"] == status && repair == nil {
			if og, _, _ := unstructured.NestedInt64(app.Object, "status", "observedGeneration"); og == gen {
				return nil // nothing changed: no write
			}
		}
	}
	body := map[string]any{"observedGeneration": gen, "conditions": []any{map[string]any{
		"type": "Ready", "status": status, "reason": reason, "observedGeneration": gen,
		"message":            fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want),
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}}}
	if repair != nil {
		body["lastRepair"] = repair
	}
	patch := newApp()
	patch.SetName(app.GetName())
	patch.SetNamespace(app.GetNamespace())
	patch.Object["status"] = body
	return r.Status().Patch(ctx, patch, client.Merge)
}

func main() {
	var ns, metrics string
	var concurrency int
	var events bool
	flag.StringVar(&ns, "namespace", "", "the namespace to watch")
	flag.StringVar(&metrics, "metrics-addr", "0", "where to serve /metrics (plain HTTP; 0: nowhere)")
	flag.IntVar(&concurrency, "concurrency", 16, "reconciles at once")
	flag.BoolVar(&events, "events", true, "an Event per repair (the manager's events.k8s.io recorder)")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseDevMode(false)))
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	scheme.AddKnownTypeWithName(appGVK, &unstructured.Unstructured{})
	cfg := ctrl.GetConfigOrDie()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metrics},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r := &reconciler{Client: mgr.GetClient(), scheme: scheme}
	if events {
		r.events = mgr.GetEventRecorder(manager)
	}
	err = ctrl.NewControllerManagedBy(mgr).
		For(newApp()).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("crpeer: started")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
