//! The plain blocking-threads relay the bench compares with: std blocking sockets, one thread
//! per output when fanning out, a fixed buffer size. Run as `BENCH --blocking-relay BUF tcp IN
//! OUT` or `BENCH --blocking-relay BUF udp IN OUT...`.
use super::*;

pub fn main(args: &[String]) -> i32 {
    let run = || -> io::Result<()> {
        let buf: usize = args[0].parse().map_err(io::Error::other)?;
        let addr = |s: &String| s.parse::<SocketAddr>().map_err(io::Error::other);
        let input = addr(&args[2])?;
        let outputs: Vec<SocketAddr> = args[3..].iter().map(addr).collect::<Result<_, _>>()?;
        match args[1].as_str() {
            "tcp" => tcp(buf, input, &outputs),
            "udp" => udp(buf, input, &outputs),
            "udploop" => udp_loop(buf, input, &outputs),
            k => Err(io::Error::other(format!("unknown kind {k}"))),
        }
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("blocking relay: {e}");
            1
        }
    }
}

fn tcp(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
    let l = TcpListener::bind(input)?;
    let (mut src, _) = l.accept()?;
    let mut outs: Vec<TcpStream> = outputs
        .iter()
        .map(TcpStream::connect)
        .collect::<Result<_, _>>()?;
    let mut b = vec![0u8; buf];
    if outs.len() == 1 {
        // 1-to-1: one thread, read then write.
        let out = &mut outs[0];
        loop {
            let n = src.read(&mut b)?;
            if n == 0 {
                break;
            }
            out.write_all(&b[..n])?;
        }
        out.shutdown(Shutdown::Write)?;
        return Ok(());
    }
    let mut txs: Vec<SyncSender<Arc<[u8]>>> = Vec::new();
    let mut joins = Vec::new();
    for mut o in outs {
        let (tx, rx) = sync_channel::<Arc<[u8]>>(16);
        txs.push(tx);
        joins.push(thread::spawn(move || {
            for chunk in rx {
                if o.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = o.shutdown(Shutdown::Write);
        }));
    }
    loop {
        let n = src.read(&mut b)?;
        if n == 0 {
            break;
        }
        let chunk: Arc<[u8]> = Arc::from(&b[..n]);
        for tx in &txs {
            let _ = tx.send(Arc::clone(&chunk));
        }
    }
    drop(txs);
    joins.into_iter().for_each(|j| {
        let _ = j.join();
    });
    Ok(())
}

/// Samplicator's shape: one thread, receive, then send to each output in turn.
fn udp_loop(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    ringrelay::driver::net::set_rcvbuf(&s, input_rcvbuf());
    s.bind(&input.into())?;
    let s: UdpSocket = s.into();
    let out = UdpSocket::bind("127.0.0.1:0")?;
    let mut b = vec![0u8; buf.min(65536)];
    loop {
        let n = s.recv(&mut b)?;
        for o in outputs {
            let _ = out.send_to(&b[..n], o);
        }
    }
}

fn udp(buf: usize, input: SocketAddr, outputs: &[SocketAddr]) -> io::Result<()> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    ringrelay::driver::net::set_rcvbuf(&s, input_rcvbuf());
    s.bind(&input.into())?;
    let s: UdpSocket = s.into();
    let mut txs: Vec<SyncSender<Arc<[u8]>>> = Vec::new();
    for o in outputs {
        let (tx, rx) = sync_channel::<Arc<[u8]>>(4096);
        let out = UdpSocket::bind("127.0.0.1:0")?;
        out.connect(o)?;
        txs.push(tx);
        thread::spawn(move || {
            for d in rx {
                let _ = out.send(&d);
            }
        });
    }
    let mut b = vec![0u8; buf.min(65536)];
    loop {
        let n = s.recv(&mut b)?;
        let d: Arc<[u8]> = Arc::from(&b[..n]);
        for tx in &txs {
            // A full queue drops, as a UDP relay must rather than stall the input.
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(Arc::clone(&d)) {
                return Ok(());
            }
        }
    }
}
