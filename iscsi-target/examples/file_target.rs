//! A standalone iSCSI target over a file, for trying initiators by hand:
//!
//! ```text
//! cargo run -p hpchain-iscsi --example file_target -- 127.0.0.1:3260 /tmp/lun.img 1073741824 [512]
//! iscsi-ls iscsi://127.0.0.1:3260/
//! ```

use hpchain_iscsi::{ExportConfig, FileDevice, Portal, IQN_PREFIX};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: file_target LISTEN FILE SIZE_BYTES [BLOCK_SIZE]");
        std::process::exit(2);
    }
    let size: u64 = args[2].parse()?;
    let block_size: u32 = args.get(3).map(|b| b.parse()).transpose()?.unwrap_or(512);
    let device = Arc::new(FileDevice::create(args[1].as_ref(), size, block_size)?);
    let portal = Portal::new(vec![args[0].clone()]);
    let iqn = format!("{IQN_PREFIX}:file");
    portal.add_export(
        "file",
        ExportConfig {
            iqn: iqn.clone(),
            ..Default::default()
        },
        device,
    )?;
    let listener = tokio::net::TcpListener::bind(&args[0]).await?;
    println!("serving iscsi://{}/{iqn}/0", args[0]);
    portal.serve(listener).await?;
    Ok(())
}
