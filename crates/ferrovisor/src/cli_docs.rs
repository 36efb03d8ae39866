//! `ferrovisor completions SHELL` and `ferrovisor manpage [--dir DIR]`:
//! shell completions (clap_complete) and man pages (clap_mangen) generated
//! from the command line's one definition, [`crate::Cli`].
//!
//! They are subcommands rather than a build step so that an installed
//! binary (`cargo install`) makes them for the options it has, and a
//! packager runs them at packaging time:
//!
//! ```text
//! ferrovisor completions bash > /usr/share/bash-completion/completions/ferrovisor
//! ferrovisor manpage --dir /usr/share/man/man1
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub(crate) struct ManpageArgs {
    /// Write a page for ferrovisor and one for each subcommand
    /// (ferrovisor-run.1, ...) into DIR, instead of ferrovisor(1) on
    /// standard output.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub(crate) fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "ferrovisor",
        &mut out,
    );
    write_stdout(&out)
}

pub(crate) fn manpage(args: &ManpageArgs) -> ExitCode {
    let cmd = crate::Cli::command();
    match &args.dir {
        Some(dir) => match clap_mangen::generate_to(cmd, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => crate::fail(
                &format!("cannot write the man pages in {}: {e}", dir.display()),
                1,
            ),
        },
        None => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => write_stdout(&out),
                Err(e) => crate::fail(&format!("cannot render the man page: {e}"), 1),
            }
        }
    }
}

fn write_stdout(data: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(data).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::fail(&format!("cannot write to standard output: {e}"), 1),
    }
}
