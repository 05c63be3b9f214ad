build-asan/src/directory/directory_name.o: src/directory/directory_name.c \
 src/directory/directory_private.h src/directory/directory.h
src/directory/directory_private.h:
src/directory/directory.h:
