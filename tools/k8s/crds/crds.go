//go:build tools

// Package crds only names the API packages controller-gen reads, so that `go mod tidy` keeps them.
package crds

import (
	_ "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)
