//! Eddy's interactive SQL shell. It talks to a server over HTTP only; the shell itself arrives
//! with the REPL work.
