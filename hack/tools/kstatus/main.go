// kstatus-check: reads a Kubernetes List (kubectl get -o json) on stdin and
// prints, for each object, what kstatus (sigs.k8s.io/cli-utils, the library
// Flux and Argo CD use) computes: `<kind>/<name> <Status> <message>`, one per
// line. A test peer for reprise's conformance tests; never imported by the
// product.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Decoded as the API machinery decodes (integers stay integers).
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(raw); err != nil {
		fmt.Fprintln(os.Stderr, "not a List:", err)
		os.Exit(2)
	}
	for i := range list.Items {
		u := &list.Items[i]
		res, err := status.Compute(u)
		if err != nil {
			fmt.Printf("%s/%s Error %s\n", u.GetKind(), u.GetName(), err)
			continue
		}
		fmt.Printf("%s/%s %s %s\n", u.GetKind(), u.GetName(), res.Status, res.Message)
	}
}
