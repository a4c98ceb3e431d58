package echo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gRPC listener accepts any method of any service (there is no
// service definition to share): a unary call carries a
// google.protobuf.StringValue and is answered with one holding the JSON
// Report of the call, whose Method and Path are the full method name
// ("/pkg.Service/Method") and whose Headers are the request metadata.
// A method named "Fail" answers with status FAILED_PRECONDITION instead,
// so that callers can see error statuses relayed.

// FailMethod is the method name the gRPC listener refuses.
const FailMethod = "Fail"

// grpcServer builds the gRPC server of one listener.
func (s *Server) grpcServer(port int) *grpc.Server {
	return grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(stream)
		if !ok {
			return status.Error(codes.Internal, "no method name")
		}
		var req wrapperspb.StringValue
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		if strings.HasSuffix(method, "/"+FailMethod) {
			return status.Error(codes.FailedPrecondition, "echo: asked to fail")
		}
		ctx := stream.Context()
		rep := &Report{Pod: s.cfg.Pod, Namespace: s.cfg.Namespace, Port: port, Method: method, Path: method,
			Headers: map[string]string{}}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			rep.Peer, rep.SocketPeer = p.Addr.String(), p.Addr.String()
		}
		if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
			rep.Local = p.LocalAddr.String()
		}
		md, _ := metadata.FromIncomingContext(ctx)
		for k, v := range md {
			rep.Headers[k] = strings.Join(v, ", ")
		}
		if a := metadata.ValueFromIncomingContext(ctx, ":authority"); len(a) > 0 {
			rep.Host = a[0]
		}
		return stream.SendMsg(wrapperspb.String(string(rep.JSON())))
	}))
}

// GRPCCall invokes method ("/pkg.Service/Method") on conn with the given
// metadata and returns the serving pod's Report. Errors carry the gRPC
// status (status.Code(err)).
func GRPCCall(ctx context.Context, conn grpc.ClientConnInterface, method string, md map[string]string) (*Report, error) {
	if len(md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, metadata.New(md))
	}
	var resp wrapperspb.StringValue
	if err := conn.Invoke(ctx, method, wrapperspb.String("echo"), &resp); err != nil {
		return nil, err
	}
	rep, err := ParseReport([]byte(resp.GetValue()))
	if err != nil {
		return nil, fmt.Errorf("echo: gRPC %s: %w", method, err)
	}
	return rep, nil
}

// serveGRPC serves gs on l until the server closes.
func (s *Server) serveGRPC(gs *grpc.Server, l net.Listener, port int) {
	if err := gs.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		s.log.Error("echo: grpc serve", "port", port, "err", err)
	}
}
