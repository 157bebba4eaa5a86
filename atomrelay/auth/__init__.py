"""Who may do what: users and roles, WS-Security UsernameToken with its replay memory, HTTP Digest/Basic, the access policy."""
