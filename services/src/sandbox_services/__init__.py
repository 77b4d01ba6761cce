"""sandbox-services: the services of the sandbox runtime."""
