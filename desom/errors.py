"""The one base of the errors a caller can fix: a request the library or an app cannot answer
as asked, whose message is written for the person who asked. Each surface turns it into its own
answer in one place (config.exceptions for the JSON API); an error that is not a UserError is
the server's fault and is answered as such."""


class UserError(ValueError):
    """A request that cannot be answered as asked; the message says why, for the user.
    A ValueError, so that code catching ValueError keeps working."""
