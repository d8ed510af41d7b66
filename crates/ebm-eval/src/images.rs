//! Folders of images as pytorch-fid reads them: sorted file names, RGB, values in [0, 1].
