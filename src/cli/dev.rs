//! dev (todo)
use std::path::Path; pub fn run(_d:&Path,_p:u16)->Result<(),super::CliError>{Err(super::CliError::config("x"))}
