"""Restores (restore=ct, restore=files): not written yet."""


class RestoreJob(object):
    def __init__(self, job):
        job.fatal("restores are not supported by this version of the plugin")
        raise NotImplementedError("restore")
