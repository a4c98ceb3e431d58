// Package leader runs the controller's writers on one replica at a time,
// elected with client-go's leader election on a coordination.k8s.io/v1
// Lease.
//
// Every replica campaigns; the one holding the lease runs the registered
// tasks, each with a context that ends when leadership ends. A replica that
// loses the lease cancels its tasks, waits for them and campaigns again.
// Stop cancels the tasks, waits for them and only then releases the lease,
// so the next leader never overlaps with this one's writers on a clean
// shutdown. (After a lost renewal the overlap is bounded by the gap between
// RenewDeadline and LeaseDuration, as with any lease.)
package leader
