// Framing, JSON and fan-out allocate per message; mimalloc is cheaper than
// glibc's malloc at that rate (see docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    imctl::cmd::main()
}
