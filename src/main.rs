fn main() -> std::process::ExitCode {
    dbn_serve::cli::main()
}
