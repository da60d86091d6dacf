//go:build tools

// Generates KubeVirt's CRDs for the test control plane from the
// kubevirt.io/api Go module with controller-gen. Never imported by the product.
package tools

import (
	_ "kubevirt.io/api/core/v1"
	_ "kubevirt.io/api/snapshot/v1beta1"
)
