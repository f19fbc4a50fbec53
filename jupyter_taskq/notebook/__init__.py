"""The kernel side: the REST client, task handles (and, later, the decorator, magic and widgets)."""
