//! The `onfh-edge` binary: set up the process, parse the command line, run the command
//! (`onfh_edge::cli`), and turn an error into a message and an exit status.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The DICOM parser reports the normal end of every data set as an error value, and
    // with RUST_BACKTRACE set each of those captures a backtrace (a stack walk per received
    // message). Library backtraces stay off unless asked for explicitly; panics still
    // honour RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: nothing else runs yet; no thread can read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // The database, the spool and the results hold patient data: nothing this process
    // creates is readable by other users, whatever umask it was started with.
    // SAFETY: umask only swaps the process's file-mode mask.
    unsafe { libc::umask(0o027) };
    let cli = onfh_edge::cli::Cli::parse();
    match onfh_edge::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("onfh-edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
