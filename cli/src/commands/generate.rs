//! `puce generate man|completions DIR` (hidden): the man pages and shell completions, generated
//! from the clap definition when the package is built (`packaging/build-deb.sh`), so they never
//! drift from the command.

use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::args::{Cli, GenerateCommand};

pub fn run(c: &GenerateCommand) -> Result<i32> {
    match c {
        GenerateCommand::Man { dir } => {
            create(dir)?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
        GenerateCommand::Completions { dir } => {
            create(dir)?;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let mut buf = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "puce", &mut buf);
                let path = dir.join(clap_complete::Generator::file_name(&shell, "puce"));
                std::fs::write(&path, buf)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(0)
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}
