// Package cniinstall puts zmesh's chained CNI plugin on a node: it copies
// the zmesh-cni binary into the runtime's CNI bin directory and adds the
// plugin to the chain of the node's primary network configuration (the
// first file by name in the CNI net directory, as container runtimes pick
// it), converting a single-plugin .conf into a .conflist when needed. The
// other plugins of the chain are kept as they are. Every write goes to a
// temporary file that is renamed into place, so the runtime never reads a
// partial file.
//
// An Installer keeps the configuration that way while it runs: the
// primary network plugin (or the runtime) may rewrite its file at any time,
// and the plugin is added again.
package cniinstall
