package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Defaults of TokenReviewOptions.
const (
	// DefaultTokenAudience is the audience a mesh CA token must carry (as
	// in Istio).
	DefaultTokenAudience = "istio-ca"
	// DefaultTokenCacheTTL is how long a successful TokenReview is reused.
	DefaultTokenCacheTTL = 30 * time.Second
	// MaxTokenCacheTTL caps TokenReviewOptions.CacheTTL.
	MaxTokenCacheTTL = time.Minute
	// DefaultTokenRefusalCacheTTL is how long a token the API server
	// refused is refused again without asking it: long enough that a
	// client retrying a stale token costs a review every 10 s at most,
	// short compared with the reviews' own TTL.
	DefaultTokenRefusalCacheTTL = 10 * time.Second
	// DefaultTokenReviewTimeout bounds one TokenReview call.
	DefaultTokenReviewTimeout = 5 * time.Second
	// MaxConcurrentTokenReviews bounds the TokenReview calls in flight:
	// every request with an unknown bearer token costs one, so callers
	// sending random tokens must not turn the controller into a flood on
	// the API server. Further calls wait (within their context).
	MaxConcurrentTokenReviews = 16
	// defaultTokenCacheSize bounds the number of cached reviews.
	defaultTokenCacheSize = 10000
	// defaultRefusalCacheSize bounds the number of cached refusals. It is
	// kept apart from the reviews, so a caller sending many bad tokens
	// cannot push out the good ones.
	defaultRefusalCacheSize = 1000
	// deletedPodLeeway is how long after its deletion timestamp a pod's
	// token stays valid (the API server's JWT leeway).
	deletedPodLeeway = time.Minute
)

// Keys of TokenReview status.user.extra that describe the object a
// service-account token is bound to.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

const serviceAccountUserPrefix = "system:serviceaccount:"

// PodLookup finds pods by namespace and name. The controller implements it
// with its informer cache (see PodsFromLister); APIPods reads the API
// server directly. It must be safe for concurrent use. A lookup that fails
// for any reason reports false.
type PodLookup interface {
	Pod(namespace, name string) (*corev1.Pod, bool)
}

// TokenReviewOptions configure NewTokenReview.
type TokenReviewOptions struct {
	// Client calls the TokenReview API. Required; its credentials need
	// "create" on tokenreviews.authentication.k8s.io.
	Client kubernetes.Interface
	// TrustDomain is the trust domain of the SPIFFE IDs returned. Required.
	TrustDomain spiffeid.TrustDomain
	// Pods confirms that the pod a token is bound to still exists. Required.
	Pods PodLookup
	// Audiences are requested in spec.audiences; the token must carry at
	// least one ([DefaultTokenAudience] when empty).
	Audiences []string
	// CacheTTL is how long a successful review is reused
	// (DefaultTokenCacheTTL when zero, at most MaxTokenCacheTTL, negative
	// disables caching). A cached review never outlives the token's own
	// expiry.
	CacheTTL time.Duration
	// RefusalCacheTTL is how long a token the API server refused (not
	// authenticated, or not a service account of this mesh) is refused
	// without another review (DefaultTokenRefusalCacheTTL when zero, at
	// most MaxTokenCacheTTL, negative disables it). A review that failed
	// (API server unreachable, timeout) is never cached.
	RefusalCacheTTL time.Duration
	// Timeout bounds one TokenReview call (DefaultTokenReviewTimeout when
	// zero).
	Timeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger receives a debug line for every refusal (discarded when nil).
	Logger *slog.Logger
}

// TokenReview authenticates Kubernetes service-account tokens from
// "authorization: Bearer <token>" with the TokenReview API.
//
// The token must be authenticated for one of the configured audiences and
// belong to a service account; the Caller's Identity is
// spiffe://<trust-domain>/ns/<ns>/sa/<sa>. A pod-bound token (TokenRequest
// with a Pod boundObjectRef, as the kubelet projects) also yields the node:
// the pod must exist in PodLookup with the token's UID, run the token's
// service account, not be terminal nor deleted more than a minute ago, and its spec.nodeName (which must
// equal the token's node-name claim when the token has one) becomes
// Caller.Node. Any other token authenticates with Node "", which can never
// impersonate.
//
// Successful reviews are cached by SHA-256 of the token for CacheTTL (never
// past the token's exp claim); the pod is checked against PodLookup on every
// call, so a deleted pod's token is refused at once. Tokens the API server
// refused are refused for RefusalCacheTTL without another review, so a
// client retrying a stale token does not cost a review per attempt; reviews
// that failed are not cached. At most MaxConcurrentTokenReviews calls are in
// flight, and further callers wait. It is safe for concurrent use.
type TokenReview struct {
	client    kubernetes.Interface
	td        spiffeid.TrustDomain
	pods      PodLookup
	audiences []string
	ttl       time.Duration
	refuseTTL time.Duration
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger

	reviews  *tokenCache[review]
	refusals *tokenCache[error]

	// inflight holds a token per TokenReview call in flight (capacity
	// MaxConcurrentTokenReviews).
	inflight chan struct{}
}

// review is what a successful TokenReview established about a token.
type review struct {
	namespace, serviceAccount string
	id                        spiffeid.ID
	// podName and podUID are set for pod-bound tokens.
	podName string
	podUID  types.UID
	// nodeName is the token's node-name claim ("" when absent).
	nodeName string
}

// NewTokenReview validates the options and returns the authenticator.
func NewTokenReview(opts TokenReviewOptions) (*TokenReview, error) {
	if opts.Client == nil {
		return nil, errors.New("auth: token review needs a Kubernetes client")
	}
	if opts.TrustDomain.IsZero() {
		return nil, errors.New("auth: token review needs a trust domain")
	}
	if opts.Pods == nil {
		return nil, errors.New("auth: token review needs a pod lookup")
	}
	aud := slices.Clone(opts.Audiences)
	if len(aud) == 0 {
		aud = []string{DefaultTokenAudience}
	}
	for _, a := range aud {
		if a == "" {
			return nil, errors.New("auth: token review: empty audience")
		}
	}
	ttl := cacheTTL(opts.CacheTTL, DefaultTokenCacheTTL)
	refuseTTL := cacheTTL(opts.RefusalCacheTTL, DefaultTokenRefusalCacheTTL)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTokenReviewTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TokenReview{
		client:    opts.Client,
		td:        opts.TrustDomain,
		pods:      opts.Pods,
		audiences: aud,
		ttl:       ttl,
		refuseTTL: refuseTTL,
		timeout:   timeout,
		now:       now,
		log:       logger,
		reviews:   newTokenCache[review](defaultTokenCacheSize),
		refusals:  newTokenCache[error](defaultRefusalCacheSize),
		inflight:  make(chan struct{}, MaxConcurrentTokenReviews),
	}, nil
}

// Authenticate implements Authenticator.
func (t *TokenReview) Authenticate(ctx context.Context) (Caller, error) {
	token, err := BearerToken(ctx)
	if err != nil {
		return Caller{}, err
	}
	c, err := t.authenticateToken(ctx, token)
	if err != nil {
		t.log.Debug("service account token refused", "error", err)
		return Caller{}, err
	}
	return c, nil
}

func (t *TokenReview) authenticateToken(ctx context.Context, token string) (Caller, error) {
	key := sha256.Sum256([]byte(token))
	now := t.now()
	r, ok := t.reviews.get(key, now)
	if !ok {
		if err, ok := t.refusals.get(key, now); ok {
			return Caller{}, err
		}
		st, err := t.review(ctx, token)
		if err != nil {
			return Caller{}, err
		}
		if r, err = t.checkStatus(st); err != nil {
			now = t.now() // the review took time
			t.refusals.put(key, err, now, now.Add(t.refuseTTL))
			return Caller{}, err
		}
		t.store(key, r, token)
	}
	node, err := t.checkPod(r)
	if err != nil {
		return Caller{}, err
	}
	return Caller{Identity: r.id.String(), Node: node}, nil
}

// review asks the API server about token.
func (t *TokenReview) review(ctx context.Context, token string) (authnv1.TokenReviewStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	select {
	case t.inflight <- struct{}{}:
		defer func() { <-t.inflight }()
	case <-ctx.Done():
		return authnv1.TokenReviewStatus{}, fmt.Errorf("auth: token review: waiting for a free slot: %w", ctx.Err())
	}
	res, err := t.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: t.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.TokenReviewStatus{}, fmt.Errorf("auth: token review: %w", err)
	}
	return res.Status, nil
}

// checkStatus turns a TokenReview status into a review, or an error saying
// why the token is not acceptable.
func (t *TokenReview) checkStatus(st authnv1.TokenReviewStatus) (review, error) {
	if !st.Authenticated {
		if st.Error != "" {
			return review{}, fmt.Errorf("auth: token not authenticated: %s", st.Error)
		}
		return review{}, errors.New("auth: token not authenticated")
	}
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(t.audiences, a) }) {
		return review{}, fmt.Errorf("auth: token audiences %q do not include any of %q", st.Audiences, t.audiences)
	}
	ns, sa, err := ParseServiceAccountUser(st.User.Username)
	if err != nil {
		return review{}, err
	}
	id, err := spiffeid.FromSegments(t.td, "ns", ns, "sa", sa)
	if err != nil {
		return review{}, fmt.Errorf("auth: service account %s/%s: %w", ns, sa, err)
	}
	r := review{namespace: ns, serviceAccount: sa, id: id}
	extra := st.User.Extra
	podName, hasPod, err := singleExtra(extra, ExtraPodName)
	if err != nil {
		return review{}, err
	}
	podUID, hasUID, err := singleExtra(extra, ExtraPodUID)
	if err != nil {
		return review{}, err
	}
	if hasPod != hasUID {
		return review{}, errors.New("auth: token names a pod without its UID, or a UID without its pod")
	}
	if !hasPod {
		return r, nil
	}
	node, _, err := singleExtra(extra, ExtraNodeName)
	if err != nil {
		return review{}, err
	}
	r.podName, r.podUID, r.nodeName = podName, types.UID(podUID), node
	return r, nil
}

// checkPod re-checks a pod-bound review against PodLookup and returns the
// caller's node ("" for tokens that are not pod-bound).
func (t *TokenReview) checkPod(r review) (string, error) {
	if r.podName == "" {
		return "", nil
	}
	pod, ok := t.pods.Pod(r.namespace, r.podName)
	if !ok || pod == nil {
		return "", fmt.Errorf("auth: token is bound to pod %s/%s, which does not exist", r.namespace, r.podName)
	}
	if pod.UID != r.podUID {
		return "", fmt.Errorf("auth: token is bound to pod %s/%s with UID %s, found UID %s", r.namespace, r.podName, r.podUID, pod.UID)
	}
	if pod.Namespace != "" && pod.Namespace != r.namespace {
		return "", fmt.Errorf("auth: pod %s/%s is not in the token's namespace", pod.Namespace, pod.Name)
	}
	if sa := podServiceAccount(pod); sa != r.serviceAccount {
		return "", fmt.Errorf("auth: pod %s/%s runs as service account %q, token is for %q", r.namespace, r.podName, sa, r.serviceAccount)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return "", fmt.Errorf("auth: pod %s/%s is %s", r.namespace, r.podName, pod.Status.Phase)
	}
	if dt := pod.DeletionTimestamp; dt != nil && dt.Add(deletedPodLeeway).Before(t.now()) {
		// As the API server does: a pod whose grace period ended more than
		// the leeway ago is gone even if a cache still shows it.
		return "", fmt.Errorf("auth: pod %s/%s was deleted at %s", r.namespace, r.podName, dt.UTC().Format(time.RFC3339))
	}
	node := pod.Spec.NodeName
	if r.nodeName != "" && r.nodeName != node {
		return "", fmt.Errorf("auth: token's node %q differs from pod %s/%s's node %q", r.nodeName, r.namespace, r.podName, node)
	}
	return node, nil
}

func podServiceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	if pod.Spec.DeprecatedServiceAccount != "" { //nolint:staticcheck // older objects may only carry the deprecated field
		return pod.Spec.DeprecatedServiceAccount //nolint:staticcheck // see above
	}
	return "default"
}

// store caches r for token until the cache TTL or the token's expiry,
// whichever comes first.
func (t *TokenReview) store(key tokenKey, r review, token string) {
	now := t.now()
	expires := now.Add(t.ttl)
	if exp, ok := TokenExpiry(token); ok && exp.Before(expires) {
		expires = exp
	}
	t.reviews.put(key, r, now, expires)
}

// cacheTTL applies the defaults and bounds of a cache TTL option: zero is
// def, negative is no caching, and at most MaxTokenCacheTTL.
func cacheTTL(ttl, def time.Duration) time.Duration {
	switch {
	case ttl == 0:
		return def
	case ttl < 0:
		return 0
	}
	return min(ttl, MaxTokenCacheTTL)
}

// ParseServiceAccountUser splits a Kubernetes service-account user name,
// "system:serviceaccount:<namespace>:<name>", into its namespace and name.
func ParseServiceAccountUser(user string) (namespace, name string, err error) {
	rest, ok := strings.CutPrefix(user, serviceAccountUserPrefix)
	if !ok {
		return "", "", fmt.Errorf("auth: user %q is not a service account", user)
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", fmt.Errorf("auth: malformed service account user %q", user)
	}
	return namespace, name, nil
}

// singleExtra returns the one value of an extra key; several values are an
// error.
func singleExtra(extra map[string]authnv1.ExtraValue, key string) (string, bool, error) {
	v, ok := extra[key]
	if !ok || len(v) == 0 {
		return "", false, nil
	}
	if len(v) != 1 || v[0] == "" {
		return "", false, fmt.Errorf("auth: token extra %s has %d values, want one non-empty", key, len(v))
	}
	return v[0], true, nil
}
