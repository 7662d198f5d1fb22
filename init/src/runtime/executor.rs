//! What a container's process runs just before it execs the service: the signal state PID 1
//! changed is restored and the seccomp filter PID 1 compiled is installed (libcontainer's
//! `Executor`), plus test mode's fault injection in that process.

use libcontainer::workload::{
    default::DefaultExecutor, Executor, ExecutorError, ExecutorSetEnvsError,
    ExecutorValidationError,
};
use oci_spec::runtime::Spec;
use std::collections::HashMap;

/// Annotation honoured in test mode only: the container's init process hangs before exec,
/// as a container whose setup blocks would, so the start deadline can be tested.
pub const TEST_HANG_ANNOTATION: &str = "org.sysctr.test.hang-before-start";

/// Annotation honoured in test mode only: the container's init process panics before exec,
/// as a bug in the runtime's child-side code would, so the panic path of a forked child
/// can be tested.
pub const TEST_PANIC_ANNOTATION: &str = "org.sysctr.test.panic-before-start";

/// The seccomp filter a container process gets just before it execs.
#[derive(Clone, Default)]
pub(super) enum Seccomp {
    /// None, or libcontainer's own (loaded from the spec for a created container).
    #[default]
    Spec,
    /// The program PID 1 compiled (seccomp/bpf.rs).
    Compiled(crate::seccomp::bpf::Program),
    /// A profile PID 1 cannot compile, for an exec'd process: libcontainer compiles it.
    Profile(oci_spec::runtime::LinuxSeccomp),
}

/// Wraps libcontainer's default executor: just before exec it restores the signal mask and
/// dispositions PID 1 changed, so a service sees signals like any process would, and
/// installs the seccomp filter PID 1 compiled. A process exec'd into a running container
/// gets the container's filter the same way: libcontainer 0.7's tenant builder drops it,
/// and `sysctr exec` must not be a way around the filter (runc applies it there too).
#[derive(Clone, Default)]
pub(super) struct ServiceExecutor {
    pub(super) seccomp: Seccomp,
    /// Test mode fault injection: block forever before the workload starts.
    pub(super) hang: bool,
    /// Test mode fault injection: panic in the container's process before it execs.
    pub(super) panic: bool,
}

impl Executor for ServiceExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        crate::sys::reset_signals_for_exec();
        crate::sys::take_controlling_tty();
        match &self.seccomp {
            Seccomp::Spec => {}
            Seccomp::Compiled(p) => p.install().map_err(|e| {
                ExecutorError::Other(format!("install the container's seccomp filter: {e}"))
            })?,
            Seccomp::Profile(profile) => {
                libcontainer::seccomp::initialize_seccomp(profile).map_err(|e| {
                    ExecutorError::Other(format!("install the container's seccomp filter: {e}"))
                })?;
            }
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if self.panic {
            panic!("injected panic in a container's process before exec ({TEST_PANIC_ANNOTATION})");
        }
        if self.hang {
            // Deliberately never returns: the start deadline must end it.
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}
