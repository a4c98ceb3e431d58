package e2e

import "k8s.io/apimachinery/pkg/util/intstr"

func intOrPort(p int) intstr.IntOrString { return intstr.FromInt32(int32(p)) }
