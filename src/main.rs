//! The `ci-janitor` binary: everything is in the library; this only hands over.

fn main() -> std::process::ExitCode {
    ci_janitor::commands::main()
}
