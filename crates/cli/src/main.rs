//! `gatehouse`: parse the arguments, run the command, exit.

/// mimalloc rather than glibc's malloc: the gateway allocates and frees buffers of a few
/// kilobytes per request, which makes glibc consolidate its free lists on almost every request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatehouse_cli::run()
}
