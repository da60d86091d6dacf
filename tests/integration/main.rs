//! Integration tests against the real local control plane (hack/control-plane):
//! kube-apiserver, etcd, kube-controller-manager, kube-scheduler and kwok.

mod support;

mod api_validation;
mod applications;
mod bmcs;
mod chart;
mod control_plane;
mod crds;
mod databases;
mod faults;
mod kstatus;
mod leader;
mod offsite;
mod operator_validation;
mod ownership;
mod plans;
mod plastprod;
mod plugin;
mod recovery;
mod runtime;
mod servers;
mod sites;
mod sites_chaos;
mod sites_plastprod;
mod tenancy;
mod virtual_machines;
