//go:build !race

package hbone

// raceBuild: see rawsock_race.go.
const raceBuild = false
