//! Ctrl-C (SIGINT) and SIGTERM: a flag that training loops poll between steps, so that a run
//! stops at a step boundary after writing a checkpoint instead of dying mid-step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the handler (once per process; later calls do nothing). The first signal asks the
/// run to stop at the next step boundary; a second one ends the process at once.
pub fn install() -> anyhow::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        result = ctrlc::set_handler(|| {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                eprintln!("second interrupt: stopping now");
                std::process::exit(130);
            }
            eprintln!("interrupt: finishing the current step, writing a checkpoint, then stopping (again to stop now)");
        });
    });
    result.map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

/// True once Ctrl-C or SIGTERM has been received.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The error a training loop returns after it has checkpointed on an interrupt.
pub fn stopped(model: &str, step: usize, checkpoint: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted after step {step} of {model}; checkpoint written to {}; continue with --resume",
        checkpoint.display()
    )
}
