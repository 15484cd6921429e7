// Command pulumi-language-python is tuneform's own, deliberately small Python language host for the Pulumi engine.
//
// Why it exists: Pulumi's language host lives in the Go module
// github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3, which has no tags and which the Go module proxy
// reachable from our build machines does not serve. The engine only needs a handful of RPCs to run a program, so we
// implement those over the sdk/v3 gRPC definitions and leave everything else (code generation, packing, linking,
// templates) unimplemented: tuneform never uses it. RunPlugin is implemented so that a Python policy pack directory
// (`pulumi preview --policy-pack policy`) runs like it does under Pulumi's own host.
//
// The program itself is executed exactly as Pulumi's own host does it: the Python shim `pulumi-language-python-exec`
// (shipped in the sdk/v3 module source and installed next to this binary) is run with the virtualenv's interpreter and
// receives the monitor/engine addresses and run settings as flags and the stack config as JSON in PULUMI_CONFIG.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// userActionableExit is the exit code the exec shim uses after it has already shown the user a readable error
// (e.g. a Python traceback from the program); the engine must then stop without adding its own message.
const userActionableExit = 32

// execShimName is the Python script that turns our flags into pulumi.runtime settings and runs the program.
const execShimName = "pulumi-language-python-exec"

func main() {
	showVersion := flag.Bool("version", false, "print the plugin version and exit")
	executor := flag.String("use-executor", "", "path of the exec shim (default: next to this binary)")
	// The engine adds --tracing to every plugin's command line when tracing is on; an unknown flag would make us
	// exit before printing our port. (-v and --logtostderr, added with --logflow, are registered by the sdk's
	// logging package, which this binary links.)
	_ = flag.String("tracing", "", "ignored: this host does not emit traces")
	flag.Parse()

	if *showVersion {
		fmt.Println(version.Version)
		return
	}

	shim := *executor
	if shim == "" {
		self, err := os.Executable()
		if err != nil {
			fail("cannot locate own executable: %v", err)
		}
		shim = filepath.Join(filepath.Dir(self), execShimName)
	}
	if _, err := os.Stat(shim); err != nil {
		fail("missing %s next to the language host (%v); rerun `make bootstrap`", execShimName, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cancel := make(chan bool)
	go func() {
		<-ctx.Done()
		close(cancel)
	}()

	host := &languageHost{shim: shim, shutdown: stop}
	if args := flag.Args(); len(args) > 0 {
		// The engine passes its address as the first argument (and again in Handshake).
		host.watchEngine(args[0])
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
	})
	if err != nil {
		fail("cannot start the language host gRPC server: %v", err)
	}
	// The engine reads the port from the first line of our stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fail("language host stopped serving: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pulumi-language-python (tuneform): "+format+"\n", args...)
	os.Exit(1)
}

type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	shim     string
	shutdown context.CancelFunc // stops serving; called when the engine goes away

	mu            sync.Mutex
	engineAddress string
	stopRun       context.CancelFunc // stops the program being run (see Run), so Cancel can end it
}

// watchEngine remembers the engine's address and shuts the host down when the engine stops answering, so a killed
// `pulumi up` never leaves us (and the Python program under us) running. Pulumi's own hosts poll every 5 minutes,
// which left the program of a killed run alive that long; a health check on the engine's local socket costs next to
// nothing, and only a refused connection (the engine is gone) ends the host.
func (h *languageHost) watchEngine(address string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if address == "" || address == h.engineAddress {
		return
	}
	h.engineAddress = address
	err := rpcutil.Healthcheck(context.Background(), address, 2*time.Second, func() {
		h.stopProgram()
		h.shutdown()
	})
	if err != nil {
		fail("cannot watch the engine at %s: %v", address, err)
	}
}

func (h *languageHost) stopProgram() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopRun != nil {
		h.stopRun()
	}
}

func (h *languageHost) Handshake(
	ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.watchEngine(req.GetEngineAddress())
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// GetRequiredPlugins reports nothing: tuneform's resources are dynamic providers, served by the bundled
// pulumi-resource-pulumi-python shim, so there is nothing for the engine to download (and no internet to do it).
func (h *languageHost) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

// GetRequiredPackages reports nothing, for the same reason as GetRequiredPlugins.
func (h *languageHost) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// InstallDependencies does not touch the virtualenv: it is built from requirements.lock by `make bootstrap`, and a
// second installer would only fight it.
func (h *languageHost) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	msg := "tuneform: the Python virtualenv is managed by `make bootstrap` (uv pip sync requirements.lock); nothing to install\n"
	return stream.Send(&pulumirpc.InstallDependenciesResponse{Stdout: []byte(msg)})
}

func (h *languageHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	python, err := virtualenvPython(req.GetInfo())
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, python, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("running %s --version: %w", python, err)
	}
	return &pulumirpc.AboutResponse{
		Executable: python,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "Python "),
	}, nil
}

// Cancel stops the program being run. The engine sends it when it closes the language host (at the end of every
// deployment, including one that failed, e.g. on a mandatory policy violation) and when the user cancels the update
// (Ctrl-C, after the providers were told to cancel): either way it will not use the program's result.
func (h *languageHost) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.stopProgram()
	return &emptypb.Empty{}, nil
}

// virtualenvPython returns the interpreter of the virtualenv named by the `virtualenv` runtime option in Pulumi.yaml,
// resolved against the project root as Pulumi does.
func virtualenvPython(info *pulumirpc.ProgramInfo) (string, error) {
	venv, _ := info.GetOptions().AsMap()["virtualenv"].(string)
	if venv == "" {
		return "", errors.New("Pulumi.yaml must set `runtime.options.virtualenv` (tuneform uses `.venv`, created by `make bootstrap`)")
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(info.GetRootDirectory(), venv)
	}
	python := filepath.Join(venv, "bin", "python")
	if _, err := os.Stat(python); err != nil {
		return "", fmt.Errorf("virtualenv %s has no bin/python (%v); run `make bootstrap` first", venv, err)
	}
	return python, nil
}

func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	python, err := virtualenvPython(info)
	if err != nil {
		// A configuration problem the user can fix: report it as a program error, not as an RPC failure.
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	// The flag names are the exec shim's argparse options; empty values are left out as the shim expects.
	h.mu.Lock()
	engineAddress := h.engineAddress
	h.mu.Unlock()
	args := []string{"-u", h.shim}
	flagArgs := []struct{ name, value string }{
		{"monitor", req.GetMonitorAddress()},
		{"engine", engineAddress},
		{"project", req.GetProject()},
		{"root_directory", info.GetRootDirectory()},
		{"stack", req.GetStack()},
		{"pwd", req.GetPwd()},
		{"dry_run", strconv.FormatBool(req.GetDryRun())},
		{"parallel", strconv.Itoa(int(req.GetParallel()))},
		{"organization", req.GetOrganization()},
	}
	for _, f := range flagArgs {
		if f.value != "" {
			args = append(args, "--"+f.name, f.value)
		}
	}
	args = append(args, info.GetEntryPoint())
	args = append(args, req.GetArgs()...)

	// An empty stack config arrives as a nil map, which would encode as `null`; the SDK needs an object.
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("encoding stack config: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("encoding secret config keys: %w", err)
	}

	// The program is stopped when the engine cancels (Cancel), abandons the call (ctx) or goes away (watchEngine).
	// By then the engine will not use its result: after a failed deployment (e.g. a mandatory policy violation) the
	// program is typically still blocked in the SDK's final SignalAndWaitForShutdown call, which is never answered.
	// So it gets SIGTERM, not SIGINT (what Pulumi's own host sends): Python dies at once and quietly on SIGTERM,
	// while SIGINT raises KeyboardInterrupt in the exec shim, which does not catch it and prints a traceback (two, as
	// Cancel and the end of the call each send one) into the preview's output. Nothing is lost: the program runs with
	// -u, so no output is buffered, and a tuneform program holds nothing to clean up (the resources' work happens in
	// the providers). WaitDelay: a program that ignores SIGTERM is killed 5 s later.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	cmd := exec.CommandContext(runCtx, python, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = info.GetProgramDirectory()
	// Our stdout/stderr are read by the engine and shown as the program's output, so stream straight through.
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.Env = append(virtualenvEnv(os.Environ(), python),
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
	)

	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not start %s: %v", python, err)}, nil
	}
	h.mu.Lock()
	h.stopRun = stopRun
	h.mu.Unlock()
	waitErr := cmd.Wait()
	h.mu.Lock()
	h.stopRun = nil
	h.mu.Unlock()
	// Python may exit before its last writes reach the engine; flush ours so the traceback is shown in full.
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()

	if waitErr == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	if runCtx.Err() != nil {
		// We stopped it: the engine is finished with this run and no longer reads the answer.
		return &pulumirpc.RunResponse{Bail: true}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		if exitErr.ExitCode() == userActionableExit {
			// The shim already logged the Python error through the engine; just stop.
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode())}, nil
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("running the Python program failed: %v", waitErr)}, nil
}

// virtualenvEnv returns env with the virtualenv of python activated, as `source bin/activate` would: its bin first on
// PATH, VIRTUAL_ENV set, and no PYTHONHOME to point the interpreter elsewhere.
func virtualenvEnv(env []string, python string) []string {
	venvBin := filepath.Dir(python)
	path := venvBin
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = venvBin + string(os.PathListSeparator) + v // the last PATH wins, as in exec
		}
	}
	return append(withoutKeys(env, "PYTHONHOME", "PATH", "VIRTUAL_ENV"), "PATH="+path, "VIRTUAL_ENV="+filepath.Dir(venvBin))
}

// withoutKeys drops the named variables from an environment list so they can be set afresh.
func withoutKeys(env []string, keys ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, k := range keys {
			if name == k {
				drop = true
				break
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// RunPlugin runs a plugin written in Python (for tuneform: the CrossGuard policy pack in policy/) and streams its
// output back to the engine, which reads the plugin's gRPC port from the first stdout line, then its exit code.
//
// The engine sends the plugin directory as info (root = program directory = the directory holding PulumiPolicy.yaml
// or PulumiPlugin.yaml, whose runtime options arrive as info.options), its own environment as env, and the plugin's
// arguments (logging flags, then the engine address). Like Pulumi's own host:
//   - a policy pack (kind "analyzer") runs as `python -u -m pulumi.policy <args...> <pack dir>` in the pack directory:
//     pulumi.policy is the SDK's runner for packs, which runs the pack's __main__.py;
//   - any other plugin runs as `python -u <plugin dir> <args...>` (its __main__.py) in the engine's working directory.
//
// Left out, because tuneform has no use for them: the `pulumi.run.plugin` mode for pyproject-packaged plugins without a
// __main__.py, debugger attachment, and the proxy Pulumi's host puts in front of a pack to hand it the stack's
// config as PULUMI_CONFIG before it starts (pulumi_policy >= 1.x receives the stack config over ConfigureStack).
func (h *languageHost) RunPlugin(
	req *pulumirpc.RunPluginRequest, stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	if req.GetAttachDebugger() {
		return errors.New("tuneform's Python language host cannot attach a debugger to a plugin")
	}
	info := req.GetInfo()
	python, err := virtualenvPython(info)
	if err != nil {
		return err
	}

	dir := info.GetProgramDirectory()
	var args []string
	var workDir string
	if req.GetKind() == string(apitype.AnalyzerPlugin) {
		args = append(append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...), dir)
		// Packs have always run from their own directory; a pack may open files next to itself.
		workDir = dir
	} else {
		args = append([]string{"-u", dir}, req.GetArgs()...)
		workDir = req.GetPwd()
	}

	// The engine closes a plugin by ending this call, so the call's context bounds the process. SIGTERM rather than
	// the default SIGKILL lets Python exit on its own (it dies at once, without a traceback, as nothing in a plugin
	// handles SIGTERM); WaitDelay kills it if it has not gone, or left a child holding our pipes, 5 s later.
	ctx := stream.Context()
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = workDir
	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	cmd.Env = virtualenvEnv(env, python)
	// exec copies stdout and stderr on two goroutines, and a gRPC stream must not be sent on concurrently.
	out := &pluginOutput{stream: stream}
	cmd.Stdout = out.writer(func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: b}}
	})
	cmd.Stderr = out.writer(func(b []byte) *pulumirpc.RunPluginResponse {
		return &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: b}}
	})

	if err := cmd.Start(); err != nil {
		return fmt.Errorf("could not start plugin %s with %s: %w", req.GetName(), python, err)
	}
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		// The engine ended the call (it is done with the plugin); there is nobody left to tell.
		return nil
	}
	code := 0
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		code = exitErr.ExitCode() // -1 when a signal ended the plugin
	} else if waitErr != nil {
		return fmt.Errorf("running plugin %s: %w", req.GetName(), waitErr)
	}
	// The exit code is the last message: the engine closes the plugin's stdout and stderr when it arrives.
	return out.send(&pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)}})
}

// pluginOutput serialises a plugin's stdout and stderr chunks onto the RunPlugin stream.
type pluginOutput struct {
	mu     sync.Mutex
	stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]
}

func (o *pluginOutput) send(msg *pulumirpc.RunPluginResponse) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stream.Send(msg)
}

// writer returns an io.Writer that sends each chunk as one message built by wrap. The chunk is copied because exec
// reuses its buffer and Send may still hold the message.
func (o *pluginOutput) writer(wrap func([]byte) *pulumirpc.RunPluginResponse) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		if err := o.send(wrap(append([]byte(nil), p...))); err != nil {
			return 0, err
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
