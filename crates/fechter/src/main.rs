//! The `fechter` binary: the CLI and (soon) the agent, the I/O shell around
//! the pure `fechter-core`.

mod cli;
mod control;
mod plan;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use control::{Request, Response};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fechter: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Plan(args) => {
            let report = plan::plan(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
            } else {
                print!("{}", plan::render(&report, &args.addresses));
            }
            Ok(())
        }
        Command::Agent(_args) => Err(
            "the agent runtime is not part of this build yet; `fechter plan` shows the allocation rules offline".into(),
        ),
        Command::AddAddress { spec, socket } => {
            print_ok(control::call(&socket.path, &Request::AddAddress { spec }))
        }
        Command::RemoveAddress { spec, socket } => {
            print_ok(control::call(&socket.path, &Request::RemoveAddress { spec }))
        }
        Command::Up { socket } => print_ok(control::call(&socket.path, &Request::Up)),
        Command::Down { socket } => print_ok(control::call(&socket.path, &Request::Down)),
        Command::Status { json, socket } => {
            match control::call(&socket.path, &Request::Status).map_err(|e| e.to_string())? {
                Response::Ok { body } if json => {
                    println!("{}", serde_json::to_string_pretty(&body).expect("serializes"));
                    Ok(())
                }
                Response::Ok { body } => {
                    println!("{body}");
                    Ok(())
                }
                Response::Error { error } => Err(error),
            }
        }
    }
}

fn print_ok(r: Result<Response, control::ClientError>) -> Result<(), String> {
    match r.map_err(|e| e.to_string())? {
        Response::Ok { .. } => Ok(()),
        Response::Error { error } => Err(error),
    }
}
