/// The NBD server: serves a QED or raw image over SwiftNIO using the `NBD` codec.
public enum NBDServerModule {}
