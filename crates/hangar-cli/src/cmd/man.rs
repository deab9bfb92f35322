//! `hangar man [--dir DIR]`: man pages generated from the clap definitions.
//! With `--dir`, `hangar.1` and one page per subcommand (`hangar-vm-create.1`,
//! …) as packagers install them into `man1/`; without, `hangar.1` on stdout.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::args::{Cli, ManArgs};

pub fn run(a: &ManArgs) -> u8 {
    let result = match &a.dir {
        Some(dir) => write_pages(dir),
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .and_then(|()| out.flush())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the man pages: {e}");
            1
        }
    }
}

/// Writes every page into `dir`, creating it if needed.
pub fn write_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}
