use std::io::IsTerminal;
use std::process::ExitCode;

use imctl::cmd;
use tracing_subscriber::EnvFilter;

// Framing, JSON and fan-out allocate per message; mimalloc is cheaper than
// glibc's malloc at that rate (see docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cmd::parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(cli.log_filter()).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter ({e}); using info");
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `imctl exec` passes its command's exit code on without comment.
            if e.downcast_ref::<cmd::exec::ChildExit>().is_none() {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}
