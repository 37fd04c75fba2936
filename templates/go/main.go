// Command plugin is the berth-template plugin: a server for Berth plugin protocol v1 written
// with Go's standard library only.
//
// The file has two parts:
//
//   - "Your plugin": the name, the version, the table of capabilities and hooks, and their
//     handlers. This is the part to edit. Every capability and hook listed here must also be
//     in berth.yaml (GET /v1/describe answers from these tables, and `berth plugin test`
//     compares the two).
//   - "Protocol plumbing": routing, the Berth-* headers, deadlines, errors, logs and graceful
//     shutdown. It follows docs/protocol.md; you should not need to change it.
//
// Run it locally with `BERTH_PORT=8080 go run .` and try
//
//	curl -s localhost:8080/v1/invoke/greet -d '{"name":"Berth"}'
//
// Check it against the protocol without an image, then build and check the image:
//
//	go build -o plugin . && berth plugin test --exec ./plugin
//	berth build . && berth plugin test berth/berth-template:0.1.0
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// ===========================================================================================
// Your plugin
// ===========================================================================================

// The plugin's name and version: they must equal `metadata.name` and `spec.version` in
// berth.yaml.
const (
	pluginName    = "berth-template"
	pluginVersion = "0.1.0"
)

// capabilities lists what POST /v1/invoke/{name} serves.
var capabilities = []Capability{
	{Name: "greet", Handle: greet},
}

// hooks lists what POST /v1/hooks/{name} serves. A Filter hook answers a HookAction; an
// Observe hook answers 204 and whatever it returns is ignored.
var hooks = []Hook{
	{Name: "before_command", Mode: Filter, Handle: beforeCommand},
}

// greetInput is the input of `greet`; berth.yaml holds its JSON Schema.
type greetInput struct {
	Name *string `json:"name"`
}

// greetOutput is the output of `greet`.
type greetOutput struct {
	Message string `json:"message"`
}

// greet answers {"message": "Hello, NAME!"}, with "world" when no name is given.
func greet(ctx context.Context, req *Request, input json.RawMessage) (any, error) {
	var in greetInput
	if err := DecodeInput(input, &in); err != nil {
		return nil, err
	}
	name := "world"
	if in.Name != nil {
		name = *in.Name
	}
	// maxLength in berth.yaml counts characters (code points), as JSON Schema does.
	if utf8.RuneCountInString(name) > 256 {
		return nil, InvalidInput("name is longer than 256 characters; send a shorter name")
	}
	req.Log(LevelDebug, "greeting", "name", name)
	return greetOutput{Message: "Hello, " + name + "!"}, nil
}

// commandEvent is the event of the `before_command` hook (see the hook catalogue in
// docs/protocol.md).
type commandEvent struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Cwd     string   `json:"cwd"`
}

// beforeCommand vetoes any command that contains `rm -rf /` and lets every other one through.
// A filter may also rewrite the event: return Modify(changedEvent).
func beforeCommand(ctx context.Context, req *Request, event json.RawMessage) (HookAction, error) {
	var ev commandEvent
	if err := DecodeEvent(event, &ev); err != nil {
		return HookAction{}, err
	}
	if strings.Contains(ev.Command, "rm -rf /") {
		return Veto("this command contains `rm -rf /`, which would delete the whole filesystem; name the directory to remove instead"), nil
	}
	return Continue(), nil
}

// ===========================================================================================
// Protocol plumbing (docs/protocol.md, protocol v1)
// ===========================================================================================

// Limits and defaults; they match the Rust SDK's.
const (
	defaultPort  = 8080
	maxBodyBytes = 4 << 20 // larger request bodies get 413 payload_too_large
	drainTimeout = 10 * time.Second
)

// Protocol headers.
const (
	headerRequestID  = "Berth-Request-Id"
	headerDeadlineMs = "Berth-Deadline-Ms"
	headerCaller     = "Berth-Caller"
)

// CapabilityFunc handles one invocation. ctx is cancelled when the request's deadline runs
// out (the caller then gets 504 deadline_exceeded whatever the function does later), so
// long work should watch ctx.Done(). input is the request body, already checked to be JSON.
// Return a value that encodes to the capability's output, or an error: an *Error is
// answered as it says, any other error as 500 internal.
type CapabilityFunc func(ctx context.Context, req *Request, input json.RawMessage) (any, error)

// HookFunc handles one hook event. event is the envelope's `event`, already checked to be a
// JSON object.
type HookFunc func(ctx context.Context, req *Request, event json.RawMessage) (HookAction, error)

// Capability is one entry of the capabilities table.
type Capability struct {
	Name   string
	Handle CapabilityFunc
}

// HookMode says how a hook subscriber answers.
type HookMode string

// The two hook modes.
const (
	Filter  HookMode = "filter"
	Observe HookMode = "observe"
)

// Hook is one entry of the hooks table.
type Hook struct {
	Name   string
	Mode   HookMode
	Handle HookFunc
}

// HookAction is a filter's answer; build it with Continue, Modify or Veto.
type HookAction struct {
	Action string `json:"action"`
	Event  any    `json:"event,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Continue lets the event through unchanged.
func Continue() HookAction { return HookAction{Action: "continue"} }

// Modify replaces the event; event must encode to a JSON object and should keep the hook's
// catalogue fields.
func Modify(event any) HookAction { return HookAction{Action: "modify", Event: event} }

// Veto stops the event; reason is shown to whoever caused it and must not be empty.
func Veto(reason string) HookAction { return HookAction{Action: "veto", Reason: reason} }

// Request carries what the protocol headers said about the request being served.
type Request struct {
	// RequestID is Berth-Request-Id ("" when absent); pass it on when calling other plugins.
	RequestID string
	// Caller is Berth-Caller: another plugin's name or "user:<subject>" ("" when absent).
	Caller string
	// Deadline is when the caller stops waiting; zero when there is none.
	Deadline time.Time
}

// Log writes a log line that belongs to this request. kv are key, value pairs.
func (r *Request) Log(level Level, message string, kv ...any) {
	logLine(level, r.RequestID, message, kv...)
}

// Error is an error answer: an HTTP status and a stable lower_snake_case code.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// NewError makes an error answered with status, code and message.
func NewError(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// InvalidInput is 400 invalid_input: the input does not fit the capability.
func InvalidInput(message string) *Error {
	return NewError(http.StatusBadRequest, "invalid_input", message)
}

// Unprocessable is 422 with a code of your own: well-formed input that cannot be processed.
func Unprocessable(code, message string) *Error {
	return NewError(http.StatusUnprocessableEntity, code, message)
}

// Internal is 500 internal: a fault in the plugin.
func Internal(message string) *Error {
	return NewError(http.StatusInternalServerError, "internal", message)
}

// DecodeInput decodes a capability's input into v (a pointer), refusing unknown fields and
// JSON null (encoding/json would leave v untouched for null). Type errors are invalid_input.
func DecodeInput(input json.RawMessage, v any) error {
	if bytes.Equal(bytes.TrimSpace(input), []byte("null")) {
		return InvalidInput("the input is null; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(input))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return InvalidInput("the input does not fit: " + err.Error())
	}
	// encoding/json matches field names case-insensitively ({"NAME": ...} fills Name); the
	// schema does not, so the top-level keys must be spelled exactly as the json tags say.
	if key, ok := unknownKey(input, v); !ok {
		return InvalidInput(fmt.Sprintf("the input does not fit: unknown field %q", key))
	}
	return nil
}

// unknownKey checks the keys of a JSON object against the exact field names of the struct v
// points to. It returns the first key that is not one of them, and false.
func unknownKey(input json.RawMessage, v any) (string, bool) {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", true
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(input, &fields) != nil {
		return "", true
	}
	names := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Name
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == "-" {
			continue
		} else if tag != "" {
			name = tag
		}
		names[name] = true
	}
	for key := range fields {
		if !names[key] {
			return key, false
		}
	}
	return "", true
}

// DecodeEvent decodes a hook event into v (a pointer). Unknown fields are allowed: events may
// gain fields in later versions.
func DecodeEvent(event json.RawMessage, v any) error {
	if err := json.Unmarshal(event, v); err != nil {
		return InvalidInput("the event does not fit: " + err.Error())
	}
	return nil
}

func main() {
	logLevel = levelFromEnv(os.Getenv("BERTH_LOG"))
	fitToLimits()
	port, err := portFromEnv()
	if err != nil {
		logLine(LevelError, "", err.Error())
		os.Exit(1)
	}
	router, err := newRouter(capabilities, hooks)
	if err != nil {
		logLine(LevelError, "", err.Error())
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		logLine(LevelError, "", "could not listen", "port", port, "error", err.Error())
		os.Exit(1)
	}
	// net/http itself answers requests it cannot parse (a bad Content-Length, an unknown
	// Transfer-Encoding, HTTP/2 request lines) with a plain-text body: those never reach the
	// router, and the protocol asks for the JSON error body only where the plugin can.
	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logWriter{LevelWarn}, "", 0),
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(listener) }()
	logLine(LevelInfo, "", "listening", "plugin", pluginName, "version", pluginVersion, "port", port,
		"gomaxprocs", runtime.GOMAXPROCS(0))

	select {
	case err := <-served:
		logLine(LevelError, "", "server failed", "error", err.Error())
		os.Exit(1)
	case sig := <-stop:
		logLine(LevelInfo, "", "shutting down: finishing requests in flight", "signal", sig.String())
	}
	// Shutdown closes the listener and the idle keep-alive connections at once, then waits
	// for the requests in flight (also one whose body is still arriving).
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logLine(LevelWarn, "", "requests still in flight after the drain timeout; exiting anyway",
			"drain_ms", drainTimeout.Milliseconds())
		return
	}
	logLine(LevelInfo, "", "stopped")
}

// fitToLimits sizes the Go runtime for the container's limits, which the runtime passes as
// BERTH_CPU_MILLIS and BERTH_MEMORY_BYTES: Go 1.19 would size its scheduler from the host's
// CPUs (and its threads count against the pids limit), and its garbage collector knows no
// memory limit unless told. GOMAXPROCS and GOMEMLIMIT, when set, win.
func fitToLimits() {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		if millis, err := strconv.Atoi(os.Getenv("BERTH_CPU_MILLIS")); err == nil && millis > 0 {
			if procs := (millis + 999) / 1000; procs < runtime.GOMAXPROCS(0) {
				runtime.GOMAXPROCS(procs)
			}
		}
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		if limit, err := strconv.ParseInt(os.Getenv("BERTH_MEMORY_BYTES"), 10, 64); err == nil && limit > 0 {
			debug.SetMemoryLimit(limit / 10 * 9) // leave room for what the GC does not manage
		}
	}
}

func portFromEnv() (int, error) {
	v, ok := os.LookupEnv("BERTH_PORT")
	if !ok {
		return defaultPort, nil
	}
	port, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("BERTH_PORT=%q is not a port number (use 1-65535, e.g. 8080)", v)
	}
	return port, nil
}

// router serves the four protocol v1 paths.
type router struct {
	capabilities map[string]CapabilityFunc
	hooks        map[string]Hook
	describe     []byte
}

func newRouter(caps []Capability, hks []Hook) (*router, error) {
	type describedCapability struct {
		Name string `json:"name"`
	}
	type describedHook struct {
		Name string   `json:"name"`
		Mode HookMode `json:"mode"`
	}
	d := struct {
		Name         string                `json:"name"`
		Version      string                `json:"version"`
		Capabilities []describedCapability `json:"capabilities"`
		Hooks        []describedHook       `json:"hooks"`
	}{Name: pluginName, Version: pluginVersion, Capabilities: []describedCapability{}, Hooks: []describedHook{}}
	rt := &router{capabilities: map[string]CapabilityFunc{}, hooks: map[string]Hook{}}
	for _, c := range caps {
		if _, dup := rt.capabilities[c.Name]; dup {
			return nil, fmt.Errorf("capability %q is listed twice", c.Name)
		}
		rt.capabilities[c.Name] = c.Handle
		d.Capabilities = append(d.Capabilities, describedCapability{c.Name})
	}
	for _, h := range hks {
		if _, dup := rt.hooks[h.Name]; dup {
			return nil, fmt.Errorf("hook %q is listed twice", h.Name)
		}
		if h.Mode != Filter && h.Mode != Observe {
			return nil, fmt.Errorf("hook %q has mode %q; use Filter or Observe", h.Name, h.Mode)
		}
		rt.hooks[h.Name] = h
		d.Hooks = append(d.Hooks, describedHook{h.Name, h.Mode})
	}
	var err error
	rt.describe, err = json.Marshal(d)
	return rt, err
}

// ServeHTTP applies the protocol's order of checks: path, method, capability or hook name,
// deadline header, body size, JSON syntax, input shape, then the handler.
func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	requestID := r.Header.Get(headerRequestID)
	if ids := r.Header.Values(headerRequestID); len(ids) > 0 {
		w.Header()[headerRequestID] = ids
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	rt.route(rec, r, requestID)
	level := LevelInfo
	if r.URL.Path == "/healthz" && rec.status == http.StatusOK {
		level = LevelDebug // the runtime polls it; keep the log quiet
	}
	kv := []any{"method", r.Method, "path", r.URL.Path, "status", rec.status,
		"elapsed_ms", float64(time.Since(started).Microseconds()) / 1000}
	if rec.code != "" {
		kv = append(kv, "code", rec.code)
	}
	if rec.status >= 500 {
		level = LevelWarn
	}
	logLine(level, requestID, "answered", kv...)
}

func (rt *router) route(w *recorder, r *http.Request, requestID string) {
	path := r.URL.EscapedPath()
	switch {
	case path == "/healthz":
		if allowMethod(w, r, "GET") {
			writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
		}
		return
	case path == "/v1/describe":
		if allowMethod(w, r, "GET") {
			writeJSON(w, http.StatusOK, rt.describe)
		}
		return
	}
	if name, ok := pathParam(path, "/v1/invoke/"); ok {
		if !allowMethod(w, r, "POST") {
			return
		}
		handle, found := rt.capabilities[name]
		if !found {
			writeError(w, NewError(http.StatusNotFound, "unknown_capability",
				fmt.Sprintf("this plugin has no capability %q; GET /v1/describe lists the ones it has", name)))
			return
		}
		rt.dispatch(w, r, requestID, func(ctx context.Context, req *Request, body []byte) (int, []byte, error) {
			return invoke(ctx, req, body, handle)
		})
		return
	}
	if name, ok := pathParam(path, "/v1/hooks/"); ok {
		if !allowMethod(w, r, "POST") {
			return
		}
		hook, found := rt.hooks[name]
		if !found {
			writeError(w, NewError(http.StatusNotFound, "unknown_hook",
				fmt.Sprintf("this plugin does not subscribe to hook %q; GET /v1/describe lists its hooks", name)))
			return
		}
		rt.dispatch(w, r, requestID, func(ctx context.Context, req *Request, body []byte) (int, []byte, error) {
			return runHook(ctx, req, body, hook)
		})
		return
	}
	writeError(w, NewError(http.StatusNotFound, "not_found",
		"no such endpoint; protocol v1 serves /healthz, /v1/describe, /v1/invoke/{capability} and /v1/hooks/{hook}"))
}

// pathParam returns the one non-empty path segment after prefix, percent-decoded.
func pathParam(path, prefix string) (string, bool) {
	if !strings.HasPrefix(path, prefix) {
		return "", false
	}
	rest := path[len(prefix):]
	if rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	name, err := url.PathUnescape(rest)
	if err != nil {
		return "", false
	}
	return name, true
}

// allowMethod answers 405 with an Allow header unless r uses method (GET also allows HEAD).
func allowMethod(w *recorder, r *http.Request, method string) bool {
	if r.Method == method || (method == "GET" && r.Method == "HEAD") {
		return true
	}
	allow := method
	if method == "GET" {
		allow = "GET, HEAD"
	}
	w.Header().Set("Allow", allow)
	writeError(w, NewError(http.StatusMethodNotAllowed, "method_not_allowed",
		fmt.Sprintf("%s takes %s, not %s", r.URL.Path, allow, r.Method)))
	return false
}

// work turns a request body into a status and a JSON body (none for 204), or an error.
type work func(ctx context.Context, req *Request, body []byte) (int, []byte, error)

// dispatch checks the deadline header, reads the body and runs the work under the deadline.
func (rt *router) dispatch(w *recorder, r *http.Request, requestID string, run work) {
	started := time.Now()
	budget, hasDeadline, err := parseDeadline(r.Header.Values(headerDeadlineMs))
	if err != nil {
		writeError(w, err)
		return
	}
	if hasDeadline && budget == 0 {
		writeError(w, deadlineExceeded(0))
		return
	}
	ctx := r.Context()
	req := &Request{RequestID: requestID, Caller: r.Header.Get(headerCaller)}
	if hasDeadline {
		var cancel context.CancelFunc
		req.Deadline = started.Add(budget)
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}

	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	// Reading the body cannot be interrupted in Go 1.19; the deadline is checked once it is in.
	if ctx.Err() != nil {
		writeError(w, deadlineExceeded(budget.Milliseconds()))
		return
	}

	type outcome struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				logLine(LevelError, requestID, "handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- outcome{err: Internal("the plugin failed while handling the request")}
			}
		}()
		status, out, err := run(ctx, req, body)
		done <- outcome{status, out, err}
	}()
	select {
	case o := <-done:
		if o.err != nil {
			writeError(w, o.err)
		} else if o.status == http.StatusNoContent {
			w.WriteHeader(http.StatusNoContent)
		} else {
			writeJSON(w, o.status, o.body)
		}
	case <-ctx.Done():
		// The handler goes on in the background until it notices ctx; the caller is answered now.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			writeError(w, deadlineExceeded(budget.Milliseconds()))
		} else {
			writeError(w, NewError(http.StatusServiceUnavailable, "cancelled", "the client closed the connection"))
		}
	}
}

// parseDeadline reads Berth-Deadline-Ms: absent means no deadline; optional spaces around
// ASCII digits; more than one header, or anything else, is 400 bad_request; a number too
// large for a time.Duration means no deadline.
func parseDeadline(values []string) (time.Duration, bool, error) {
	if len(values) == 0 {
		return 0, false, nil
	}
	if len(values) > 1 {
		return 0, false, NewError(http.StatusBadRequest, "bad_request",
			"the Berth-Deadline-Ms header was sent more than once; send it once")
	}
	v := strings.Trim(values[0], " \t")
	bad := NewError(http.StatusBadRequest, "bad_request",
		fmt.Sprintf("the Berth-Deadline-Ms header must be a whole number of milliseconds, got %q", values[0]))
	if v == "" {
		return 0, false, bad
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false, bad
		}
	}
	ms, err := strconv.ParseUint(v, 10, 64)
	if err != nil || ms > uint64(1<<63-1)/uint64(time.Millisecond) {
		return 0, false, nil
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

func deadlineExceeded(budgetMs int64) *Error {
	return NewError(http.StatusGatewayTimeout, "deadline_exceeded",
		fmt.Sprintf("the request's deadline of %d ms ran out before the plugin answered", budgetMs))
}

// readBody reads the whole request body, refusing more than maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooLarge := NewError(http.StatusRequestEntityTooLarge, "payload_too_large",
		fmt.Sprintf("the request body is larger than this plugin's limit of %d bytes", maxBodyBytes))
	if r.ContentLength > maxBodyBytes {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge
		}
		return nil, NewError(http.StatusBadRequest, "bad_request", "could not read the request body: "+err.Error())
	}
	return body, nil
}

// validJSON accepts exactly one JSON value in UTF-8 (RFC 8259), as the Rust SDK does.
func validJSON(body []byte) bool {
	return utf8.Valid(body) && json.Valid(body)
}

func malformedJSON(body []byte) *Error {
	msg := "the request body is not valid JSON"
	var v any
	if !utf8.Valid(body) {
		msg += ": it is not UTF-8"
	} else if err := json.Unmarshal(body, &v); err != nil {
		msg += ": " + err.Error()
	}
	return NewError(http.StatusBadRequest, "malformed_json", msg)
}

func invoke(ctx context.Context, req *Request, body []byte, handle CapabilityFunc) (int, []byte, error) {
	if !validJSON(body) {
		return 0, nil, malformedJSON(body)
	}
	output, err := handle(ctx, req, json.RawMessage(body))
	if err != nil {
		return 0, nil, err
	}
	out, err := json.Marshal(output)
	if err != nil {
		return 0, nil, Internal("could not encode the output: " + err.Error())
	}
	return http.StatusOK, out, nil
}

func runHook(ctx context.Context, req *Request, body []byte, hook Hook) (int, []byte, error) {
	if !validJSON(body) {
		return 0, nil, malformedJSON(body)
	}
	var envelope map[string]json.RawMessage
	if err := json.Unmarshal(body, &envelope); err != nil {
		return 0, nil, InvalidInput(`a hook body must be an object like {"event": {...}}`)
	}
	event, ok := envelope["event"]
	if !ok {
		return 0, nil, InvalidInput(`the hook body has no "event"; send {"event": {...}}`)
	}
	if !isObject(event) {
		return 0, nil, InvalidInput(`the hook body's "event" must be a JSON object`)
	}
	action, err := hook.Handle(ctx, req, event)
	if err != nil {
		return 0, nil, err
	}
	if hook.Mode == Observe {
		return http.StatusNoContent, nil, nil
	}
	switch action.Action {
	case "continue":
		action = Continue()
	case "modify":
		e, err := json.Marshal(action.Event)
		if err != nil || !isObject(e) {
			return 0, nil, Internal("the hook answered modify with an event that is not a JSON object")
		}
		action = HookAction{Action: "modify", Event: json.RawMessage(e)}
	case "veto":
		if strings.TrimSpace(action.Reason) == "" {
			return 0, nil, Internal("the hook answered veto without a reason")
		}
		action = Veto(action.Reason)
	default:
		return 0, nil, Internal(fmt.Sprintf("the hook answered action %q; use Continue, Modify or Veto", action.Action))
	}
	out, err := json.Marshal(action)
	if err != nil {
		return 0, nil, Internal("could not encode the hook action: " + err.Error())
	}
	return http.StatusOK, out, nil
}

func isObject(raw []byte) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && raw[0] == '{'
}

// recorder remembers the status and error code of the response for the log line.
type recorder struct {
	http.ResponseWriter
	status int
	code   string
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w *recorder, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Internal(err.Error())
	}
	body, _ := json.Marshal(map[string]map[string]string{"error": {"code": e.Code, "message": e.Message}})
	w.code = e.Code
	writeJSON(w, e.Status, body)
}

// Level is a log level.
type Level int

// Log levels, lowest first.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelWarn
	LevelError
)

var levelNames = [...]string{"DEBUG", "INFO", "WARN", "ERROR"}

var (
	logLevel = LevelInfo
	logMu    sync.Mutex
)

func levelFromEnv(v string) Level {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "debug", "trace":
		return LevelDebug
	case "warn", "warning":
		return LevelWarn
	case "error":
		return LevelError
	default:
		return LevelInfo
	}
}

// logLine writes one JSON object on stdout: timestamp, level, message, request_id (when the
// line belongs to a request), then the key, value pairs in kv.
func logLine(level Level, requestID, message string, kv ...any) {
	if level < logLevel {
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"timestamp":"`)
	b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	b.WriteString(`","level":"`)
	b.WriteString(levelNames[level])
	b.WriteString(`","message":`)
	writeJSONValue(&b, message)
	if requestID != "" {
		b.WriteString(`,"request_id":`)
		writeJSONValue(&b, requestID)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteByte(',')
		writeJSONValue(&b, fmt.Sprint(kv[i]))
		b.WriteByte(':')
		writeJSONValue(&b, kv[i+1])
	}
	b.WriteString("}\n")
	logMu.Lock()
	defer logMu.Unlock()
	_, _ = os.Stdout.Write(b.Bytes())
}

func writeJSONValue(b *bytes.Buffer, v any) {
	out, err := json.Marshal(v)
	if err != nil {
		out, _ = json.Marshal(fmt.Sprint(v))
	}
	b.Write(out)
}

// logWriter turns net/http's own messages (bad connections and the like) into log lines.
type logWriter struct{ level Level }

func (w logWriter) Write(p []byte) (int, error) {
	logLine(w.level, "", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
