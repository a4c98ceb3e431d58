// Command zmesh-cni is zmesh's chained CNI plugin. Container runtimes run
// it; see ztunnel/cniplugin.
package main

import "github.com/zmesh/zmesh/ztunnel/cniplugin"

func main() { cniplugin.Main() }
